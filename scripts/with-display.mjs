#!/usr/bin/env node
// Runs a command with an X display, for headless-gl (the `gpu` backend): as is when DISPLAY is
// set, else under `xvfb-run -a` when it is installed (CI installs it; see .ci/run).
//   node scripts/with-display.mjs <command> [args...]
import { spawnSync } from 'node:child_process';

const [command, ...args] = process.argv.slice(2);
if (!command) {
  console.error('usage: node scripts/with-display.mjs <command> [args...]');
  process.exit(2);
}
const hasXvfb = spawnSync('sh', ['-c', 'command -v xvfb-run'], { stdio: 'ignore' }).status === 0;
const useXvfb = !process.env.DISPLAY && hasXvfb;
if (!useXvfb && !process.env.DISPLAY) {
  const msg = 'no DISPLAY and no xvfb-run: the gpu (headless-gl) backend cannot run here';
  if (process.env.CI === 'true') {
    console.error(`error: ${msg}; install xvfb (see .ci/run)`);
    process.exit(1);
  }
  console.error(`note: ${msg}`);
}
const [cmd, argv] = useXvfb ? ['xvfb-run', ['-a', command, ...args]] : [command, args];
const r = spawnSync(cmd, argv, { stdio: 'inherit' });
process.exit(r.status ?? 1);
