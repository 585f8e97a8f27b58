/**
 * The tree's layers, as docs/architecture.md draws them: the numeric core and the state imports
 * no I/O, stream or compute library (no node: module, rxjs, kafkajs, gpu.js, onnxruntime), so
 * they run anywhere; operators add rxjs and nothing of Kafka or a device.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { projectPath } from '../src/paths.js';

/** Every package a folder's modules import (not relative paths), with the file that imports it. */
function packagesImported(folder: string): string[] {
  const dir = projectPath('src', folder);
  return readdirSync(dir, { recursive: true })
    .map(String)
    .filter((f) => f.endsWith('.ts'))
    .flatMap((f) => [...readFileSync(join(dir, f), 'utf8').matchAll(/^(?:import|export)[^;]*? from '([^.][^']*)'/gm)].map((m) => `${m[1]} (${folder}/${f})`));
}

describe('the layers of src/', () => {
  it('core/ and state/ import only zod and fft.js; operators/ add rxjs only', () => {
    const outside = (folder: string, allowed: string[]): string[] => packagesImported(folder).filter((p) => !allowed.includes(p.split(' ')[0]!));
    expect(outside('core', ['zod', 'fft.js'])).toEqual([]);
    expect(outside('state', ['zod'])).toEqual([]);
    expect(outside('operators', ['zod', 'rxjs'])).toEqual([]);
  });
});
