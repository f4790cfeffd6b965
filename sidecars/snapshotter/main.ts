#!/usr/bin/env node
import { controllerMain } from '../common/run.js';
import { Snapshotter } from './snapshotter.js';
import { DEFAULT_NAME_PREFIX } from './content.js';

controllerMain('tscsi-snapshotter', 60, (k, csi, opts, extra) => new Snapshotter(k, csi, { ...opts, namePrefix: extra['snapshot-name-prefix'] }), {
  'snapshot-name-prefix': { type: 'string', default: DEFAULT_NAME_PREFIX },
});
