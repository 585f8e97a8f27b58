import { defineConfig } from 'vitest/config';

/**
 * Two projects. `unit` needs no broker and no Java (`npm run test:unit`); `integration`
 * (test/*.integration.test.ts) runs against a real Kafka cluster that its global setup starts
 * (see test/support/kafka-global-setup.ts), one file at a time, after the unit tests: the
 * failover tests kill brokers of the shared cluster, and timing-sensitive service tests should
 * not share the two cores with the CPU-heavy kernel tests.
 */
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 240_000,
    // One worker per core: the machine has two, and GL/wasm kernels are CPU-heavy.
    pool: 'forks',
    reporters: ['default'],
    projects: [
      {
        extends: true,
        test: { name: 'unit', include: ['test/**/*.test.ts'], exclude: ['test/**/*.integration.test.ts'], sequence: { groupOrder: 0 } },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/**/*.integration.test.ts'],
          globalSetup: ['test/support/kafka-global-setup.ts'],
          poolOptions: { forks: { singleFork: true } },
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
