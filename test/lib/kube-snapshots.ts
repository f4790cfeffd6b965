// VolumeSnapshots, pre-provisioned contents, VolumeGroupSnapshots and the claims restored or
// cloned from them, as a Kubernetes user makes and reads them (kubectl objects only), shared by the e2e files that run them through an installed
// driver (deploy-snapshots.test.ts, deploy-rbd.test.ts).
import { ClusterEnv, DRIVER, MIN, claim, pod } from './cluster-env.js';

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

/** Waits for the (group) snapshot's status.readyToUse; returns the object. */
function readyToUse(env: ClusterEnv, kind: 'VolumeSnapshot' | 'VolumeGroupSnapshot', name: string, describe: () => Promise<string>): Promise<any> {
  return env.waitFor(
    `${kind} ${name} readyToUse`,
    async () => {
      const v = await env.json(['get', kind.toLowerCase(), name]);
      return v.status?.readyToUse === true && v;
    },
    3 * MIN,
    describe,
  );
}

/** Waits for the VolumeSnapshot to be readyToUse; returns it, its content and the ms from `since`. */
export async function snapshotReady(env: ClusterEnv, name: string, since: number, describe: () => Promise<string>): Promise<{ vs: any; content: any; ms: number }> {
  const vs = await readyToUse(env, 'VolumeSnapshot', name, describe);
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

/** A claim of `sc` cloned from claim `source` (same namespace). */
export function claimFromClaim(name: string, sc: string, source: string, size: string) {
  return claim(name, sc, size, { dataSource: { kind: 'PersistentVolumeClaim', name: source } });
}

/** A pre-provisioned VolumeSnapshotContent importing the driver's snapshot `snapshotHandle` for VolumeSnapshot default/`snapshot`. */
export function staticContent(name: string, snapshotHandle: string, snapshot: string, deletionPolicy: 'Delete' | 'Retain', annotations?: Record<string, string>) {
  return {
    apiVersion: SNAPSHOT_API,
    kind: 'VolumeSnapshotContent',
    metadata: { name, ...(annotations ? { annotations } : {}) },
    spec: { driver: DRIVER, deletionPolicy, source: { snapshotHandle }, volumeSnapshotRef: { name: snapshot, namespace: 'default' } },
  };
}

export const GROUP_API = 'groupsnapshot.storage.k8s.io/v1';

/** A claim carrying the label a VolumeGroupSnapshot selects by (`group: <group>`). */
export function groupMember(name: string, sc: string, size: string, group: string) {
  const c = claim(name, sc, size);
  return { ...c, metadata: { ...c.metadata, labels: { group } } };
}

/** A VolumeGroupSnapshot of class `className` over the claims labelled `group: <group>`. */
export function volumeGroupSnapshot(name: string, className: string, group: string) {
  return { apiVersion: GROUP_API, kind: 'VolumeGroupSnapshot', metadata: { name, namespace: 'default' }, spec: { volumeGroupSnapshotClassName: className, source: { selector: { matchLabels: { group } } } } };
}

/** A pod with claims[0] at /data and each other claim at /<its name>. */
export function podOfClaims(name: string, claims: string[], script: string) {
  const p: any = pod(name, claims[0], script);
  for (const c of claims.slice(1)) {
    p.spec.containers[0].volumeMounts.push({ name: c, mountPath: `/${c}` });
    p.spec.volumes.push({ name: c, persistentVolumeClaim: { claimName: c } });
  }
  return p;
}

/**
 * Waits for the VolumeGroupSnapshot to be readyToUse, then for its member VolumeSnapshots (the
 * snapshot-controller makes one per claim, owned by the group) to be ready; returns the group,
 * its content, the member VolumeSnapshot of each claim and the ms from `since` to each point.
 */
export async function groupSnapshotReady(
  env: ClusterEnv,
  name: string,
  members: number,
  since: number,
  describe: () => Promise<string>,
): Promise<{ vgs: any; content: any; snapshotOfClaim: Map<string, string>; readyMs: number; membersMs: number }> {
  const vgs = await readyToUse(env, 'VolumeGroupSnapshot', name, describe);
  const readyMs = Date.now() - since;
  const snapshotOfClaim = await env.waitFor(
    `${members} ready member VolumeSnapshots of ${name}`,
    async () => {
      const vss = (await env.json(['get', 'volumesnapshot'])).items.filter((s: any) => s.metadata.ownerReferences?.some((o: any) => o.uid === vgs.metadata.uid));
      return vss.length === members && vss.every((s: any) => s.status?.readyToUse === true) && new Map<string, string>(vss.map((s: any) => [s.spec.source.persistentVolumeClaimName, s.metadata.name]));
    },
    2 * MIN,
    describe,
  );
  const membersMs = Date.now() - since;
  const content = await env.json(['get', 'volumegroupsnapshotcontent', vgs.status.boundVolumeGroupSnapshotContentName]);
  return { vgs, content, snapshotOfClaim, readyMs, membersMs };
}

/** Deletes the VolumeGroupSnapshot and waits for its content and its member VolumeSnapshots to go. */
export async function removeGroupSnapshot(env: ClusterEnv, vgs: any, describe: () => Promise<string>): Promise<void> {
  const contentName = vgs.status.boundVolumeGroupSnapshotContentName;
  await env.kubectl(['delete', 'volumegroupsnapshot', vgs.metadata.name, '--wait=true', '--timeout=120s']);
  await env.waitFor(`${contentName} gone`, async () => (await env.kubectl(['get', 'volumegroupsnapshotcontent', contentName, '--ignore-not-found', '-o', 'name'])).trim() === '', 2 * MIN, describe);
  await env.waitFor(
    `the member VolumeSnapshots of ${vgs.metadata.name} gone`,
    async () => !(await env.json(['get', 'volumesnapshot'])).items.some((s: any) => s.metadata.ownerReferences?.some((o: any) => o.uid === vgs.metadata.uid)),
    2 * MIN,
    describe,
  );
}
