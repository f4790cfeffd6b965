#!/usr/bin/env node
// The image's entrypoint: the first argument picks the program, the rest are its flags.
//   tscsi driver --mode all ...      tscsi provisioner --csi-address ...      tscsi cli info
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const programs = {
  driver: 'dist/driver/main.js',
  provisioner: 'dist/sidecars/provisioner/main.js',
  attacher: 'dist/sidecars/attacher/main.js',
  resizer: 'dist/sidecars/resizer/main.js',
  snapshotter: 'dist/sidecars/snapshotter/main.js',
  'health-monitor': 'dist/sidecars/health-monitor/main.js',
  registrar: 'dist/sidecars/registrar/main.js',
  livenessprobe: 'dist/sidecars/livenessprobe/main.js',
  cli: 'dist/cli/tscsi-cli.js',
};
const name = process.argv[2];
if (!name || !(name in programs)) {
  process.stderr.write(`usage: tscsi ${Object.keys(programs).join('|')} [flags...]\n`);
  process.exit(name === '--help' || name === '-h' ? 0 : 2);
}
process.argv.splice(2, 1); // the program sees only its own flags
await import(pathToFileURL(path.join(here, programs[name])).href);
