// Kubernetes access shared by the sidecars: the kubeconfig (flag, $KUBECONFIG or in-cluster),
// typed API clients, merge patches, and watches that restart themselves.
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';

export { k8s };

export function loadKubeConfig(file?: string): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  if (file) kc.loadFromFile(file);
  else if (process.env.KUBECONFIG) kc.loadFromFile(process.env.KUBECONFIG);
  else kc.loadFromCluster();
  return kc;
}

export interface Clients {
  kc: k8s.KubeConfig;
  core: k8s.CoreV1Api;
  storage: k8s.StorageV1Api;
  coordination: k8s.CoordinationV1Api;
}

export function clients(kc: k8s.KubeConfig): Clients {
  return {
    kc,
    core: kc.makeApiClient(k8s.CoreV1Api),
    storage: kc.makeApiClient(k8s.StorageV1Api),
    coordination: kc.makeApiClient(k8s.CoordinationV1Api),
  };
}

/** Options that make a patch call send a JSON merge patch. */
export const mergePatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);

/** The HTTP status of a failed API call (404, 409, ...), or undefined. */
export function httpStatus(err: unknown): number | undefined {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'number' ? code : undefined;
}

/** The wait before the first restart of a failed watch; it doubles with each further failure... */
const WATCH_BACKOFF_FIRST_MS = 1_000;
/** ...up to this, so a long API server outage is not hammered. */
const WATCH_BACKOFF_MAX_MS = 120_000;

/** The wait before the n-th consecutive restart of a failed watch: 1 s doubling to 2 min. */
export function watchBackoffMs(failures: number): number {
  return Math.min(WATCH_BACKOFF_FIRST_MS * 2 ** Math.max(0, failures - 1), WATCH_BACKOFF_MAX_MS);
}

/**
 * A list+watch cache of one resource that calls onChange(key) for every add, update and
 * delete, restarts itself after errors (backing off, so a failing API server is not hit
 * by every sidecar of every node each second), and hands every key to onChange again each
 * resync period (so nothing is lost to a missed event).
 */
export class Watch<T extends k8s.KubernetesObject> {
  private informer: k8s.Informer<T> & k8s.ObjectCache<T>;
  private resync?: NodeJS.Timeout;
  private stopped = false;
  private failures = 0;
  private lastFailure = 0;
  private restartTimer?: NodeJS.Timeout;

  constructor(
    kc: k8s.KubeConfig,
    path: string,
    list: () => Promise<k8s.KubernetesListObject<T>>,
    private readonly onChange: (key: string, obj: T | undefined) => void,
    private readonly log: Logger,
    private readonly resyncMs = 30_000,
  ) {
    this.informer = k8s.makeInformer(kc, path, list);
    const key = (o: T) => (o.metadata?.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata?.name ?? '');
    this.informer.on('add', (o) => this.onChange(key(o), o));
    this.informer.on('update', (o) => this.onChange(key(o), o));
    this.informer.on('delete', (o) => this.onChange(key(o), undefined));
    this.informer.on('error', (err) => this.restartAfter(path, err));
  }

  private restartAfter(path: string, err: unknown): void {
    if (this.stopped || this.restartTimer) return;
    const now = Date.now();
    if (now - this.lastFailure > 10 * 60_000) this.failures = 0; // it ran a good while since the last one
    this.failures++;
    this.lastFailure = now;
    const delay = watchBackoffMs(this.failures);
    this.log.warn({ path, err: String(err), attempt: this.failures, retryInMs: delay }, 'watch failed; restarting');
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (!this.stopped) this.informer.start().catch((e) => this.restartAfter(path, e));
    }, delay);
  }

  async start(): Promise<void> {
    await this.informer.start();
    this.resync = setInterval(() => {
      for (const o of this.informer.list()) this.onChange(o.metadata?.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata?.name ?? '', o);
    }, this.resyncMs);
  }

  get(key: string): T | undefined {
    const [a, b] = key.includes('/') ? key.split('/') : [undefined, key];
    return this.informer.get(b, a);
  }

  list(): readonly T[] {
    return this.informer.list();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.resync) clearInterval(this.resync);
    if (this.restartTimer) clearTimeout(this.restartTimer);
    await this.informer.stop();
  }
}
