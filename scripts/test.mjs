#!/usr/bin/env node
// Runs the test suite. The `gpu` backend tests need a display for headless-gl: without one,
// the suite runs under `xvfb-run -a` when it is installed (CI installs it; see .ci/run).
import { spawnSync } from 'node:child_process';

const vitest = ['node_modules/vitest/vitest.mjs', 'run', ...process.argv.slice(2)];
const hasXvfb = spawnSync('sh', ['-c', 'command -v xvfb-run'], { stdio: 'ignore' }).status === 0;
const useXvfb = !process.env.DISPLAY && hasXvfb;
if (!useXvfb && !process.env.DISPLAY) {
  const msg = 'no DISPLAY and no xvfb-run: the gpu (headless-gl) backend cannot be tested here';
  if (process.env.CI === 'true') {
    console.error(`error: ${msg}; install xvfb (see .ci/run)`);
    process.exit(1);
  }
  console.error(`note: ${msg}; those tests will skip`);
}
const [cmd, args] = useXvfb ? ['xvfb-run', ['-a', process.execPath, ...vitest]] : [process.execPath, vitest];
const r = spawnSync(cmd, args, { stdio: 'inherit' });
process.exit(r.status ?? 1);
