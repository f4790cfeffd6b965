#!/usr/bin/env node
import { controllerMain } from '../common/run.js';
import { Provisioner } from './provisioner.js';

controllerMain('tscsi-provisioner', 60, (k, csi, opts, values) => new Provisioner(k, csi, { ...opts, nodeName: values['node-name'] as string | undefined }), {
  'node-name': { type: 'string' },
});
