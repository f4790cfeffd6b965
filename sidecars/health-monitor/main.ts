#!/usr/bin/env node
// tscsi-health-monitor: Events on claims and pods when a volume turns abnormal and when it
// recovers. --mode controller (the driver's controller service, every volume of the
// sidecar's scope), node (NodeGetVolumeHealth for this node's pods, needs --node-name) or
// all (both, as the node DaemonSet runs it: loop and LVM have their controller side there).
import { controllerMain, type Controller } from '../common/run.js';
import { parseDuration } from '../common/duration.js';
import { ControllerHealthMonitor } from './controller.js';
import { NodeHealthMonitor } from './node.js';
import { DEFAULT_INTERVAL } from './poller.js';

const MODES = ['controller', 'node', 'all'] as const;
/** kubelet's default --root-dir. */
const DEFAULT_KUBELET_DIR = '/var/lib/kubelet';

/** Several monitors as one Controller (leader election and the stop on SIGTERM see one). */
function together(parts: Controller[]): Controller {
  return {
    start: async () => {
      for (const p of parts) await p.start();
    },
    stop: async () => {
      await Promise.all(parts.map((p) => p.stop()));
    },
  };
}

controllerMain(
  'tscsi-health-monitor',
  15,
  (k, csi, opts, extra) => {
    const mode = extra.mode as (typeof MODES)[number];
    if (!MODES.includes(mode)) throw new Error(`--mode must be one of ${MODES.join(', ')}, not ${JSON.stringify(mode)}`);
    const intervalMs = parseDuration(extra['monitor-interval'] ?? DEFAULT_INTERVAL);
    if (!(intervalMs > 0)) throw new Error('--monitor-interval must be more than 0');
    const parts: Controller[] = [];
    if (mode !== 'node') parts.push(new ControllerHealthMonitor(k, csi, { ...opts, intervalMs }));
    if (mode !== 'controller') {
      if (!opts.nodeName) throw new Error(`--mode ${mode} needs --node-name (the node whose pods to check)`);
      parts.push(new NodeHealthMonitor(k, csi, { ...opts, intervalMs, nodeName: opts.nodeName, kubeletDir: extra['kubelet-dir'] ?? DEFAULT_KUBELET_DIR }));
    }
    return together(parts);
  },
  {
    mode: { type: 'string', default: 'controller' },
    'monitor-interval': { type: 'string', default: DEFAULT_INTERVAL },
    'kubelet-dir': { type: 'string', default: DEFAULT_KUBELET_DIR },
  },
);
