#!/usr/bin/env node
import { controllerMain } from '../common/run.js';
import { parseDuration } from '../common/duration.js';
import { Provisioner } from './provisioner.js';
import { CapacityTracker, lookUpOwner } from './capacity.js';

/** external-provisioner's --capacity-poll-interval default. */
const DEFAULT_CAPACITY_POLL = '1m';

controllerMain(
  'tscsi-provisioner',
  60,
  (k, csi, opts, extra) => {
    if (extra['enable-capacity'] !== 'true') return new Provisioner(k, csi, opts);
    const pollMs = parseDuration(extra['capacity-poll-interval'] ?? DEFAULT_CAPACITY_POLL);
    if (pollMs < 1000) throw new Error('--capacity-poll-interval: at least 1s');
    const level = Number(extra['capacity-ownerref-level'] ?? '1');
    if (!Number.isInteger(level) || level < -1) throw new Error('--capacity-ownerref-level: an integer, -1 (no owner) or more');
    // external-provisioner's convention: the pod tells its own name and namespace (the downward API)
    const namespace = process.env.POD_NAMESPACE;
    const podName = process.env.POD_NAME;
    if (!namespace) throw new Error('--enable-capacity needs $POD_NAMESPACE: the namespace the CSIStorageCapacity objects go to');
    if (level >= 0 && !podName) throw new Error('--enable-capacity needs $POD_NAME to find the owner of the CSIStorageCapacity objects (or --capacity-ownerref-level=-1)');
    let tracker: CapacityTracker | undefined;
    const provisioner = new Provisioner(k, csi, opts, () => tracker?.refresh());
    return {
      async start() {
        const owner = level >= 0 ? await lookUpOwner(k, namespace, podName!, level) : undefined;
        tracker = new CapacityTracker(k, csi, { ...opts, namespace, pollMs, owner, immediateBinding: extra['capacity-for-immediate-binding'] === 'true' });
        await provisioner.start();
        await tracker.start();
      },
      async stop() {
        await provisioner.stop();
        await tracker?.stop();
      },
    };
  },
  {
    'enable-capacity': { type: 'boolean', default: false },
    'capacity-poll-interval': { type: 'string', default: DEFAULT_CAPACITY_POLL },
    'capacity-ownerref-level': { type: 'string', default: '1' },
    'capacity-for-immediate-binding': { type: 'boolean', default: false },
  },
);
