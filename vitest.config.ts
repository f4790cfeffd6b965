import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Integration and e2e tests share the host's loop devices and mount table: one file at a time.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
