#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { CsiClient } from '../common/csi-client.js';
import { clients, loadKubeConfig } from '../common/kube.js';
import { sidecarLogger, driverName, fatal, runController, CONTROLLER_FLAG_OPTIONS } from '../common/run.js';
import { Attacher } from './attacher.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      ...CONTROLLER_FLAG_OPTIONS,
      'csi-address': { type: 'string', default: '/run/tscsi/csi.sock' },
      kubeconfig: { type: 'string' },
      'worker-threads': { type: 'string', default: '10' },
      timeout: { type: 'string', default: '15' },
    },
  });
  const log = sidecarLogger('tscsi-attacher');
  const csi = new CsiClient(values['csi-address']!);
  const k = clients(loadKubeConfig(values.kubeconfig));
  const name = await driverName(csi, log);
  const a = new Attacher(k, csi, {
    driverName: name,
    workers: Number(values['worker-threads']),
    timeoutMs: Number(values.timeout) * 1000,
    log,
  });
  await runController('tscsi-attacher', values, csi, k, name, a, log);
}

main().catch(fatal('tscsi-attacher'));
