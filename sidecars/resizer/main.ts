#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { CsiClient } from '../common/csi-client.js';
import { clients, loadKubeConfig } from '../common/kube.js';
import { sidecarLogger, driverName, onStop, fatal } from '../common/run.js';
import { Resizer } from './resizer.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'csi-address': { type: 'string', default: '/run/tscsi/csi.sock' },
      kubeconfig: { type: 'string' },
      'worker-threads': { type: 'string', default: '10' },
      timeout: { type: 'string', default: '10' },
    },
  });
  const log = sidecarLogger('tscsi-resizer');
  const csi = new CsiClient(values['csi-address']!);
  const r = new Resizer(clients(loadKubeConfig(values.kubeconfig)), csi, {
    driverName: await driverName(csi, log),
    workers: Number(values['worker-threads']),
    timeoutMs: Number(values.timeout) * 1000,
    log,
  });
  await r.start();
  onStop(log, async () => {
    await r.stop();
    csi.close();
  });
}

main().catch(fatal('tscsi-resizer'));
