// The node side of the health monitor (in the node DaemonSet, --node-name): every interval,
// for each running pod on this node and each volume of our driver it mounts,
// NodeGetVolumeHealth with the paths kubelet staged and published it at, and an Event on
// the pod and its claim when that volume's condition in that pod changes. Every backend's
// volumes are checked here: the node service serves them all, whatever --backends says.
import { CsiClient, codeName, rpcErrorText } from '../common/csi-client.js';
import { k8s, type Clients, Watch } from '../common/kube.js';
import { claimOf, kubeletPaths, podClaimNames, podIsActive, type Problem } from './health.js';
import { HealthMonitor, capabilityNames, emit, withKind, type MonitorOptions } from './poller.js';

export interface NodeMonitorOptions extends MonitorOptions {
  nodeName: string;
  /** kubelet's root directory (--root-dir), under which it stages and publishes volumes. */
  kubeletDir: string;
}

/** One volume of our driver in one pod on this node. */
interface PodVolume {
  pod: k8s.V1Pod;
  pv: k8s.V1PersistentVolume;
}

export class NodeHealthMonitor extends HealthMonitor<NodeMonitorOptions> {
  protected readonly kind = 'node' as const;
  private claims!: Watch<k8s.V1PersistentVolumeClaim>;

  constructor(k: Clients, csi: CsiClient, opts: NodeMonitorOptions) {
    super(k, csi, opts, `${opts.driverName}-health-monitor-node`);
  }

  async start(): Promise<void> {
    // caches read each poll; there is nothing to do per change
    this.pvs = new Watch(this.k.kc, '/api/v1/persistentvolumes', () => this.k.core.listPersistentVolume(), () => undefined, this.opts.log);
    this.claims = new Watch(this.k.kc, '/api/v1/persistentvolumeclaims', () => this.k.core.listPersistentVolumeClaimForAllNamespaces(), () => undefined, this.opts.log);
    await Promise.all([this.pvs.start(), this.claims.start()]);
    this.opts.log.info({ driver: this.opts.driverName, node: this.opts.nodeName, intervalMs: this.intervalMs }, 'node health monitor started');
    this.startPolling();
  }

  async stop(): Promise<void> {
    await this.stopPolling();
    await Promise.all([this.pvs?.stop(), this.claims?.stop()]);
  }

  /** Our driver's volumes in the running pods of this node (pods are listed each poll, by node: only this node's come back). */
  private async podVolumes(): Promise<PodVolume[]> {
    const pods = await this.k.core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${this.opts.nodeName}` });
    const out: PodVolume[] = [];
    for (const pod of pods.items.filter(podIsActive)) {
      for (const claimName of podClaimNames(pod)) {
        const volumeName = this.claims.get(`${pod.metadata!.namespace}/${claimName}`)?.spec?.volumeName;
        const pv = volumeName ? this.pvs.get(volumeName) : undefined;
        if (pv?.spec?.csi?.driver === this.opts.driverName) out.push({ pod, pv });
      }
    }
    return out;
  }

  protected async poll(): Promise<void> {
    const caps = capabilityNames(await this.csi.Node.NodeGetCapabilities({}, this.opts.timeoutMs));
    if (!caps.has('GET_VOLUME_HEALTH')) {
      if (!this.warnedNoHealth) this.opts.log.warn('the driver reports no node volume health (no GET_VOLUME_HEALTH): nothing to monitor');
      this.warnedNoHealth = true;
      return;
    }
    const seen = new Set<string>();
    for (const { pod, pv } of await this.podVolumes()) {
      const key = `${pod.metadata!.uid}/${pv.metadata!.name}`;
      seen.add(key);
      const problems = await this.volumeHealth(pod, pv);
      if (problems === undefined) continue; // unknown this time: keep the last condition
      const subject = `volume ${pv.spec!.csi!.volumeHandle} (PV ${pv.metadata!.name}) of pod ${pod.metadata!.namespace}/${pod.metadata!.name} on node ${this.opts.nodeName}`;
      const ev = this.states.observe(key, problems, subject);
      if (!ev) continue;
      this.opts.log.info({ pod: `${pod.metadata!.namespace}/${pod.metadata!.name}`, pv: pv.metadata!.name, type: ev.type }, 'volume condition changed');
      const claim = claimOf(pv);
      await emit(this.recorder, [withKind(pod, 'Pod'), ...(claim ? [claim] : [])], ev);
    }
    this.states.retain(seen);
  }

  /** NodeGetVolumeHealth at kubelet's paths; undefined when the driver could not say (NOT_FOUND: not on this node yet or any more). */
  private async volumeHealth(pod: k8s.V1Pod, pv: k8s.V1PersistentVolume): Promise<Problem[] | undefined> {
    const paths = kubeletPaths(this.opts.kubeletDir, this.opts.driverName, pv, pod.metadata!.uid!);
    try {
      const res = await this.csi.Node.NodeGetVolumeHealth(
        { volume_id: pv.spec!.csi!.volumeHandle, staging_target_path: paths.staging, volume_publish_path: paths.publish },
        this.opts.timeoutMs,
      );
      return res.volume_health?.health_statuses ?? [];
    } catch (err) {
      const code = codeName(err);
      this.opts.log[code === 'NOT_FOUND' ? 'debug' : 'warn']({ pv: pv.metadata?.name, pod: pod.metadata?.name, code, err: rpcErrorText(err) }, 'NodeGetVolumeHealth failed');
      return undefined;
    }
  }
}
