// The writes the snapshotter makes to its cluster-scoped custom objects (VolumeSnapshotContents
// and VolumeGroupSnapshotContents alike): merge patches of metadata and of the status
// subresource, and a failure put on status.error and in an Event.
import type { Logger } from 'pino';
import { k8s, mergePatch, httpStatus } from '../common/kube.js';
import type { EventReason, Recorder } from '../common/events.js';
import { errorStatus } from './content.js';

interface Obj extends k8s.KubernetesObject {
  status?: { error?: { time?: string; message?: string }; readyToUse?: boolean };
}

export class ClusterObjects<T extends Obj> {
  constructor(
    private readonly api: k8s.CustomObjectsApi,
    private readonly group: string,
    private readonly version: string,
    private readonly plural: string,
  ) {}

  private ref(name: string) {
    return { group: this.group, version: this.version, plural: this.plural, name };
  }

  async get(name: string): Promise<T> {
    return (await this.api.getClusterCustomObject(this.ref(name))) as T;
  }

  /** The object, or an Explained error saying it is missing or unreadable (`kind` names it for the user). */
  async getOrExplain(kind: string, name: string): Promise<T> {
    try {
      return await this.get(name);
    } catch (err) {
      // The API client's error stays out of ours (no cause): it carries the whole HTTP exchange.
      throw new Explained(httpStatus(err) === 404 ? `${kind} ${name} not found` : `cannot read ${kind} ${name}: ${httpStatus(err) ?? (err as Error).message}`);
    }
  }

  async patch(c: T, body: object): Promise<T> {
    return (await this.api.patchClusterCustomObject({ ...this.ref(c.metadata!.name!), body }, mergePatch)) as T;
  }

  /** Replaces the whole status, so fields the new one lacks (a cleared error) go. */
  async patchStatus(c: T, status: NonNullable<T['status']>): Promise<T> {
    const body = { status: { ...Object.fromEntries(Object.keys(c.status ?? {}).map((k) => [k, null])), ...status } };
    return (await this.api.patchClusterCustomObjectStatus({ ...this.ref(c.metadata!.name!), body }, mergePatch)) as T;
  }

  /** Merges annotations (null removes one); skips the call when nothing would change. */
  async setAnnotations(c: T, ann: Record<string, string | null>): Promise<T> {
    const have = c.metadata?.annotations ?? {};
    if (Object.entries(ann).every(([k, v]) => (v === null ? !(k in have) : have[k] === v))) return c;
    return this.patch(c, { metadata: { annotations: ann } });
  }

  /** Takes `finalizer` off, if it is there. */
  async removeFinalizer(c: T, finalizer: string): Promise<void> {
    const finalizers = c.metadata?.finalizers ?? [];
    if (!finalizers.includes(finalizer)) return;
    // resourceVersion makes the patch fail on an object changed meanwhile (another finalizer added), not overwrite it.
    await this.patch(c, { metadata: { resourceVersion: c.metadata?.resourceVersion, finalizers: finalizers.filter((f) => f !== finalizer) } });
  }

  /**
   * The error on status.error (readyToUse false, the rest kept) and as a Warning Event; the
   * same message again writes neither (a retry loop must not flood).
   */
  async reportError(c: T, recorder: Recorder, log: Logger, reason: EventReason, message: string): Promise<void> {
    log.warn({ object: c.metadata?.name, kind: c.kind, reason, err: message }, 'sync failed');
    if (c.status?.error?.message === message) return;
    const fresh = await this.get(c.metadata!.name!).catch(() => c);
    await this.patchStatus(fresh, errorStatus(fresh.status ?? {}, message) as NonNullable<T['status']>).catch((err: unknown) => log.warn({ object: c.metadata?.name, err: String(err) }, 'could not record the error on the status'));
    await recorder.event(c, 'Warning', reason, message);
  }
}

/** A failure the snapshotter describes itself (not a gRPC status): its message goes to the user as it is. */
export class Explained extends Error {}
