#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { CsiClient } from '../common/csi-client.js';
import { clients, loadKubeConfig } from '../common/kube.js';
import { sidecarLogger, driverName, fatal, runController, CONTROLLER_FLAG_OPTIONS } from '../common/run.js';
import { Resizer } from './resizer.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      ...CONTROLLER_FLAG_OPTIONS,
      'csi-address': { type: 'string', default: '/run/tscsi/csi.sock' },
      kubeconfig: { type: 'string' },
      'worker-threads': { type: 'string', default: '10' },
      timeout: { type: 'string', default: '10' },
    },
  });
  const log = sidecarLogger('tscsi-resizer');
  const csi = new CsiClient(values['csi-address']!);
  const k = clients(loadKubeConfig(values.kubeconfig));
  const name = await driverName(csi, log);
  const r = new Resizer(k, csi, {
    driverName: name,
    workers: Number(values['worker-threads']),
    timeoutMs: Number(values.timeout) * 1000,
    log,
  });
  await runController('tscsi-resizer', values, csi, k, name, r, log);
}

main().catch(fatal('tscsi-resizer'));
