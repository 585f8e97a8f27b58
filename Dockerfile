# rnnstream service image: `docker build -t rnnstream .`
# The onnx backend (onnxruntime-node's CPU binaries ship in the npm package) runs the models;
# the optional GPU packages (gl, webgpu) are not built here, and `auto` says so when it starts.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc tsconfig.json ./
COPY patches patches
COPY scripts scripts
# --ignore-scripts skips dependencies' native builds (none needed here) and our postinstall too:
# apply patches/ (kafkajs's linear message grouping) explicitly.
RUN npm ci --ignore-scripts --no-audit --no-fund && node scripts/apply-patches.mjs
COPY src src
COPY pipelines pipelines
COPY bench bench
RUN npx tsc -p tsconfig.json && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/dist dist
COPY package.json ./
COPY pipelines pipelines
COPY fixtures fixtures
USER node
EXPOSE 9464
ENTRYPOINT ["node", "--max-semi-space-size=64", "dist/src/cli/main.js"]
CMD ["run", "--pipeline", "ball-direction"]
