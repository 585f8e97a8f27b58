import { spawnSync } from 'node:child_process';
import { projectPath } from '../../src/paths.js';

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the built CLI (npm test builds it first) the way a user would. */
export function cli(args: string[], env: NodeJS.ProcessEnv = {}): CliResult {
  const r = spawnSync(process.execPath, [projectPath('dist', 'src', 'cli', 'main.js'), ...args], {
    encoding: 'utf8',
    cwd: projectPath(),
    env: { ...process.env, ...env },
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
