/** Debian's Chromium, headless, for the tests that open the HTML reports. */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';

/** Chromium with headless flags and a profile of its own, or undefined where there is none (not in CI). */
export function headlessChromium(): { readonly path: string; readonly flags: string[] } | undefined {
  const path = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
  if (!path) {
    if (process.env.CI === 'true') throw new Error('chromium is required in CI (see .ci/run)');
    console.warn('skipping the Chromium check: chromium is not installed');
    return undefined;
  }
  const profile = mkdtempSync(join(tmpdir(), 'rnnstream-chrome-'));
  const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`];
  return { path, flags };
}

/** Headless Chromium's DOM of an HTML file, or undefined where there is no Chromium (not in CI). */
export function renderedDom(html: string): string | undefined {
  const chromium = headlessChromium();
  if (!chromium) return undefined;
  const dom = spawnSync(chromium.path, [...chromium.flags, '--dump-dom', `file://${html}`], { encoding: 'utf8', timeout: 60_000 });
  expect(dom.status, dom.stderr).toBe(0);
  return dom.stdout;
}
