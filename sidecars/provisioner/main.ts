#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { CsiClient } from '../common/csi-client.js';
import { clients, loadKubeConfig } from '../common/kube.js';
import { sidecarLogger, driverName, fatal, runController, CONTROLLER_FLAG_OPTIONS } from '../common/run.js';
import { Provisioner } from './provisioner.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      ...CONTROLLER_FLAG_OPTIONS,
      'csi-address': { type: 'string', default: '/run/tscsi/csi.sock' },
      kubeconfig: { type: 'string' },
      'node-name': { type: 'string' },
      'worker-threads': { type: 'string', default: '10' },
      timeout: { type: 'string', default: '60' },
    },
  });
  const log = sidecarLogger('tscsi-provisioner');
  const csi = new CsiClient(values['csi-address']!);
  const name = await driverName(csi, log);
  const k = clients(loadKubeConfig(values.kubeconfig));
  const p = new Provisioner(k, csi, {
    driverName: name,
    nodeName: values['node-name'],
    workers: Number(values['worker-threads']),
    timeoutMs: Number(values.timeout) * 1000,
    log,
  });
  await runController('tscsi-provisioner', values, csi, k, name, p, log);
}

main().catch(fatal('tscsi-provisioner'));
