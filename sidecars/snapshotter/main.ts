#!/usr/bin/env node
import { controllerMain } from '../common/run.js';
import { Snapshotter } from './snapshotter.js';
import { DEFAULT_NAME_PREFIX } from './content.js';
import { DEFAULT_GROUP_NAME_PREFIX } from './group-content.js';

controllerMain('tscsi-snapshotter', 60, (k, csi, opts, extra) => {
  // csi-snapshotter refuses an empty prefix too: names would start with '-'.
  for (const f of ['snapshot-name-prefix', 'groupsnapshot-name-prefix']) if (!extra[f]) throw new Error(`--${f} must not be empty`);
  return new Snapshotter(k, csi, { ...opts, namePrefix: extra['snapshot-name-prefix'], groupNamePrefix: extra['groupsnapshot-name-prefix'] });
}, {
  'snapshot-name-prefix': { type: 'string', default: DEFAULT_NAME_PREFIX },
  'groupsnapshot-name-prefix': { type: 'string', default: DEFAULT_GROUP_NAME_PREFIX },
});
