import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/kafka-global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // One worker per core: the machine has two, and GL/wasm kernels are CPU-heavy.
    pool: 'forks',
    reporters: ['default'],
  },
});
