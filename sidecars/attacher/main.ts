#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { CsiClient } from '../common/csi-client.js';
import { clients, loadKubeConfig } from '../common/kube.js';
import { sidecarLogger, driverName, onStop, fatal } from '../common/run.js';
import { Attacher } from './attacher.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'csi-address': { type: 'string', default: '/run/tscsi/csi.sock' },
      kubeconfig: { type: 'string' },
      'worker-threads': { type: 'string', default: '10' },
      timeout: { type: 'string', default: '15' },
    },
  });
  const log = sidecarLogger('tscsi-attacher');
  const csi = new CsiClient(values['csi-address']!);
  const a = new Attacher(clients(loadKubeConfig(values.kubeconfig)), csi, {
    driverName: await driverName(csi, log),
    workers: Number(values['worker-threads']),
    timeoutMs: Number(values.timeout) * 1000,
    log,
  });
  await a.start();
  onStop(log, async () => {
    await a.stop();
    csi.close();
  });
}

main().catch(fatal('tscsi-attacher'));
