// The controller side of the health monitor: every interval, the health of every volume
// of this sidecar's scope from the driver's controller service (ControllerListVolumeHealth,
// all pages; else ControllerGetVolumeHealth per PV), and an Event on the PV's claim and the
// pods using it when a volume's condition changes.
import { CsiClient, codeName, rpcErrorText } from '../common/csi-client.js';
import { k8s, type Clients, Watch } from '../common/kube.js';
import { servesVolume } from '../common/scope.js';
import { claimOf, type Problem } from './health.js';
import { HealthMonitor, capabilityNames, emit, podsUsingClaim, withKind, type MonitorOptions } from './poller.js';

/** Entries asked for per ControllerListVolumeHealth page: bounds one call's work on the driver. */
const LIST_PAGE_ENTRIES = 500;

export type { MonitorOptions };

/** Every abnormal volume the driver lists, by volume ID, over all pages; a volume it does not list is healthy. */
export async function listVolumeHealth(csi: CsiClient, timeoutMs: number): Promise<Map<string, Problem[]>> {
  const out = new Map<string, Problem[]>();
  const tokens = new Set<string>();
  let token = '';
  do {
    const res = await csi.Controller.ControllerListVolumeHealth({ max_entries: LIST_PAGE_ENTRIES, starting_token: token }, timeoutMs);
    for (const e of res.entries ?? []) out.set(e.volume_id, e.health_statuses ?? []);
    token = res.next_token ?? '';
    // a driver handing out a token it gave before would keep this poll going forever
    if (token && tokens.has(token)) throw new Error(`ControllerListVolumeHealth returned next_token ${JSON.stringify(token)} twice`);
    tokens.add(token);
  } while (token);
  return out;
}

export class ControllerHealthMonitor extends HealthMonitor<MonitorOptions> {
  protected readonly kind = 'controller' as const;
  constructor(k: Clients, csi: CsiClient, opts: MonitorOptions) {
    super(k, csi, opts, `${opts.driverName}-health-monitor`);
  }

  async start(): Promise<void> {
    // the cache is read each poll; there is nothing to do per change
    this.pvs = new Watch(this.k.kc, '/api/v1/persistentvolumes', () => this.k.core.listPersistentVolume(), () => undefined, this.opts.log);
    await this.pvs.start();
    this.opts.log.info({ driver: this.opts.driverName, intervalMs: this.intervalMs }, 'controller health monitor started');
    this.startPolling();
  }

  async stop(): Promise<void> {
    await this.stopPolling();
    await this.pvs?.stop();
  }

  /** This sidecar's bound PVs: each has a claim to tell. */
  private boundPvs(): k8s.V1PersistentVolume[] {
    return this.pvs.list().filter((pv) => servesVolume(this.opts, pv) && claimOf(pv));
  }

  protected async poll(): Promise<void> {
    const caps = capabilityNames(await this.csi.Controller.ControllerGetCapabilities({}, this.opts.timeoutMs));
    const pvs = this.boundPvs();
    let healthOf: (pv: k8s.V1PersistentVolume) => Promise<Problem[] | undefined>;
    if (caps.has('LIST_VOLUME_HEALTH')) {
      const listed = await listVolumeHealth(this.csi, this.opts.timeoutMs);
      healthOf = async (pv) => listed.get(pv.spec!.csi!.volumeHandle) ?? [];
    } else if (caps.has('GET_VOLUME_HEALTH')) {
      healthOf = (pv) => this.getVolumeHealth(pv);
    } else {
      if (!this.warnedNoHealth) this.opts.log.warn('the driver reports no volume health (neither LIST_VOLUME_HEALTH nor GET_VOLUME_HEALTH): nothing to monitor');
      this.warnedNoHealth = true;
      return;
    }
    for (const pv of pvs) {
      const problems = await healthOf(pv);
      if (problems === undefined) continue; // unknown this time: keep the last condition
      const handle = pv.spec!.csi!.volumeHandle;
      const ev = this.states.observe(pv.metadata!.uid ?? pv.metadata!.name!, problems, `volume ${handle} (PV ${pv.metadata!.name})`);
      if (!ev) continue;
      const claim = claimOf(pv)!;
      const pods = await podsUsingClaim(this.k, claim.metadata!.namespace!, claim.metadata!.name!);
      this.opts.log.info({ pv: pv.metadata!.name, volumeId: handle, type: ev.type, pods: pods.length }, 'volume condition changed');
      await emit(this.recorder, [claim, ...pods.map((p) => withKind(p, 'Pod'))], ev);
    }
    this.states.retain(new Set(pvs.map((pv) => pv.metadata!.uid ?? pv.metadata!.name!)));
  }

  /** ControllerGetVolumeHealth of one PV's volume; undefined when the driver could not say. */
  private async getVolumeHealth(pv: k8s.V1PersistentVolume): Promise<Problem[] | undefined> {
    try {
      const res = await this.csi.Controller.ControllerGetVolumeHealth({ volume_id: pv.spec!.csi!.volumeHandle }, this.opts.timeoutMs);
      return res.volume_health?.health_statuses ?? [];
    } catch (err) {
      this.opts.log.warn({ pv: pv.metadata?.name, code: codeName(err), err: rpcErrorText(err) }, 'ControllerGetVolumeHealth failed');
      return undefined;
    }
  }
}
