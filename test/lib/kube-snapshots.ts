// VolumeSnapshots and the claims restored from them, as a Kubernetes user makes and reads
// them (kubectl objects only), shared by the e2e files that run them through an installed
// driver (deploy-snapshots.test.ts, deploy-rbd.test.ts).
import { ClusterEnv, MIN, claim, pod } from './cluster-env.js';

export const SNAPSHOT_API = 'snapshot.storage.k8s.io/v1';

/** A pod that checks the data the source pod wrote and says how big its filesystem is (1K blocks), then stays Running. */
export const READER = 'md5sum -c /data/sum && df -k /data | tail -1 && sleep 3600';
/** A pod that writes 4 MiB of random data and its checksum, flushed (what every copy must hold), says its filesystem's size and 'written', then stays Running. */
export const WRITER = 'head -c 4194304 /dev/urandom > /data/blob && md5sum /data/blob > /data/sum && sync && df -k /data | tail -1 && echo written && sleep 3600';

/** The filesystem's size in 1K blocks from `df -k` as READER and WRITER print it. */
export const fsBlocks = (out: string) => Number(/\s(\d+)\s+\d+\s+\d+\s+\d+%/.exec(out)![1]);

export function volumeSnapshot(name: string, source: { persistentVolumeClaimName: string } | { volumeSnapshotContentName: string }, className?: string) {
  return { apiVersion: SNAPSHOT_API, kind: 'VolumeSnapshot', metadata: { name, namespace: 'default' }, spec: { ...(className ? { volumeSnapshotClassName: className } : {}), source } };
}

/** A claim of `sc` restored from VolumeSnapshot `snapshot`. */
export function claimFromSnapshot(name: string, sc: string, snapshot: string, size: string) {
  return claim(name, sc, size, { dataSourceRef: { apiGroup: 'snapshot.storage.k8s.io', kind: 'VolumeSnapshot', name: snapshot } });
}

/** Waits for the VolumeSnapshot to be readyToUse; returns it, its content and the ms from `since`. */
export async function snapshotReady(env: ClusterEnv, name: string, since: number, describe: () => Promise<string>): Promise<{ vs: any; content: any; ms: number }> {
  const vs = await env.waitFor(
    `VolumeSnapshot ${name} readyToUse`,
    async () => {
      const v = await env.json(['get', 'volumesnapshot', name]);
      return v.status?.readyToUse === true && v;
    },
    3 * MIN,
    describe,
  );
  const ms = Date.now() - since;
  return { vs, content: await env.json(['get', 'volumesnapshotcontent', vs.status.boundVolumeSnapshotContentName]), ms };
}

/** Waits until the pod's log shows `done` (e.g. 'written', '/data/blob: OK') and a `df -k` line; returns the log. */
export function podPrinted(env: ClusterEnv, name: string, done: string, describe: () => Promise<string>): Promise<string> {
  return env.waitFor(
    `${name} printed ${done}`,
    async () => {
      const l = await env.logs(name);
      return l.includes(done) && /\d+\s+\d+\s+\d+\s+\d+%/.test(l) && l;
    },
    MIN,
    describe,
  );
}

/** Claim + READER pod made together (as an application does) -> pod Running; returns the ms it took, the volume handle and what the pod printed. */
export async function claimAndReader(env: ClusterEnv, name: string, spec: object, describe: () => Promise<string>): Promise<{ ms: number; out: string; handle: string }> {
  const t0 = Date.now();
  await env.apply(spec);
  await env.apply(pod(name, name, READER));
  await env.waitPhase(name, ['Running'], 4 * MIN, describe);
  const ms = Date.now() - t0;
  const { handle } = await env.bound(name);
  return { ms, handle, out: await podPrinted(env, name, '/data/blob: OK', describe) };
}

/** Deletes the pods, then the claims, of these names, waiting for each to go. */
export async function removePodsAndClaims(env: ClusterEnv, ...names: string[]): Promise<void> {
  await env.kubectl(['delete', 'pod', ...names, '--ignore-not-found', '--wait=true', '--timeout=120s']);
  await env.kubectl(['delete', 'pvc', ...names, '--ignore-not-found', '--wait=true', '--timeout=120s']);
}
