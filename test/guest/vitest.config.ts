// The tests that run inside the real-kernel guest (test/guest/run), named *.guest.ts so the
// host's vitest runs never pick them up: they need device-mapper. Their host-side runner is
// test/integration/guest-lvm-dm.test.ts.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/guest/**/*.guest.ts'],
    fileParallelism: false,
    // Emulated CPU (TCG): everything is several times slower than on the host.
    testTimeout: 600_000,
    hookTimeout: 600_000,
    reporters: ['default'],
  },
});
