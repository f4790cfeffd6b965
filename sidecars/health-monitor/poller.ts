// What the controller and the node monitor share: a poll every interval that never overlaps
// itself and stops cleanly, the driver's capabilities, Events on a claim and on the pods
// using it.
import type { Logger } from 'pino';
import { rpcErrorText, type CsiClient } from '../common/csi-client.js';
import { Recorder } from '../common/events.js';
import type { Clients, k8s, Watch } from '../common/kube.js';
import type { CommonControllerOptions } from '../common/run.js';
import { defaultRegistry, type Gauge } from '../common/metrics.js';
import { HealthStates, podClaimNames, podIsActive, type HealthEvent } from './health.js';

export interface MonitorOptions extends CommonControllerOptions {
  intervalMs: number;
}

/** How often the driver is asked by default: the --monitor-interval of kubernetes-csi's health monitor. */
export const DEFAULT_INTERVAL = '60s';

export abstract class Poller {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;
  /** Polls done (successful or not): the tests' and the logs' way to tell the monitor is alive. */
  polls = 0;

  constructor(
    protected readonly intervalMs: number,
    protected readonly log: Logger,
  ) {}

  protected abstract poll(): Promise<void>;

  /** After every poll, successful or not. */
  protected polled(): void {}

  /** Starts polling at once, then every interval after the end of the previous poll (a slow driver is never asked twice at a time). */
  protected startPolling(): void {
    const tick = () => {
      this.running = this.poll()
        .catch((err) => this.log.warn({ err: rpcErrorText(err) }, 'health poll failed; trying again next interval'))
        .finally(() => {
          this.polls++;
          this.polled();
          if (!this.stopped) this.timer = setTimeout(tick, this.intervalMs);
        });
    };
    tick();
  }

  protected async stopPolling(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}

/** A monitor's parts: the PVs it watches, the last condition of each volume, its Event source. */
export abstract class HealthMonitor<O extends MonitorOptions> extends Poller {
  protected pvs!: Watch<k8s.V1PersistentVolume>;
  protected readonly states = new HealthStates();
  protected readonly recorder: Recorder;
  private readonly abnormal: Gauge;
  /** The driver reports no health: said once in the log, not every poll. */
  protected warnedNoHealth = false;

  constructor(
    protected readonly k: Clients,
    protected readonly csi: CsiClient,
    protected readonly opts: O,
    eventSource: string,
  ) {
    super(opts.intervalMs, opts.log);
    this.recorder = new Recorder(k.core, eventSource, opts.log);
    this.abnormal = defaultRegistry.gauge(
      'tscsi_health_monitor_abnormal_volumes',
      'Volumes whose last health check found a problem (the node monitor counts a volume once per pod using it); the Events on their claims and pods say which and why.',
      ['monitor'],
    );
  }

  /** Which monitor this is, as the abnormal_volumes gauge labels it. */
  protected abstract readonly kind: 'controller' | 'node';

  protected override polled(): void {
    this.abnormal.set({ monitor: this.kind }, this.states.abnormal);
  }
}

/** The capability names (enum names) of a Get*Capabilities answer. */
export function capabilityNames(res: { capabilities?: Array<{ rpc?: { type?: string } }> } | undefined): Set<string> {
  return new Set((res?.capabilities ?? []).map((c) => String(c.rpc?.type ?? '')).filter(Boolean));
}

/** A listed object as an Event's involvedObject needs it (list items carry no kind). */
export const withKind = (obj: k8s.KubernetesObject, kind: string): k8s.KubernetesObject => ({ ...obj, apiVersion: 'v1', kind });

/** The running pods of `namespace` that mount claim `name`. */
export async function podsUsingClaim(k: Clients, namespace: string, name: string): Promise<k8s.V1Pod[]> {
  const pods = await k.core.listNamespacedPod({ namespace });
  return pods.items.filter((p) => podIsActive(p) && podClaimNames(p).includes(name));
}

/** Records `ev` on each object. */
export async function emit(recorder: Recorder, objects: readonly k8s.KubernetesObject[], ev: HealthEvent): Promise<void> {
  for (const o of objects) await recorder.event(o, ev.type, ev.reason, ev.message);
}
