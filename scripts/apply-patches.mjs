#!/usr/bin/env node
/**
 * postinstall: applies patches/ to node_modules with patch-package (a dev dependency), so every
 * development, CI and image install (`npm ci`) runs the same patched dependencies. See
 * patches/README.md for what each patch fixes and why.
 *
 * Where rnnstream is installed as someone else's dependency, patch-package is not installed and
 * node_modules is not ours to patch: say so and carry on.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let bin;
try {
  bin = require.resolve('patch-package/index.js');
} catch {
  process.stderr.write('rnnstream: patch-package is not installed (a dependency install); patches/ not applied\n');
  process.exit(0);
}
const r = spawnSync(process.execPath, [bin, '--error-on-fail'], { stdio: 'inherit' });
process.exit(r.status ?? 1);
