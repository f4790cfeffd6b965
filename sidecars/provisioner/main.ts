#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { CsiClient } from '../common/csi-client.js';
import { clients, loadKubeConfig } from '../common/kube.js';
import { sidecarLogger, driverName, onStop, fatal } from '../common/run.js';
import { Provisioner } from './provisioner.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
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
  const p = new Provisioner(clients(loadKubeConfig(values.kubeconfig)), csi, {
    driverName: name,
    nodeName: values['node-name'],
    workers: Number(values['worker-threads']),
    timeoutMs: Number(values.timeout) * 1000,
    log,
  });
  await p.start();
  onStop(log, async () => {
    await p.stop();
    csi.close();
  });
}

main().catch(fatal('tscsi-provisioner'));
