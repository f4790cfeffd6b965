// What the node sees of a volume's health beyond its backend's view: whether the device is
// still attached, the staging and publish mounts are still the volume's, and what the
// kernel says of the filesystem on it (shut down, made read-only, errors recorded). Shared
// by every backend; the host facts come from host/mount.ts and host/fshealth.ts.
import type { HealthProblem, NodeBackend, VolumeRecord } from './backends/backend.js';
import type { NodeVolumeState } from './nodestate.js';
import * as mnt from './host/mount.js';
import { filesystemFaults, type FilesystemFault } from './host/fshealth.js';

/**
 * The node-side problems of a volume staged here (state) at the paths the CO asked about,
 * or at every path it is staged and published at when it named none.
 */
export async function attachmentProblems(
  backend: NodeBackend,
  vol: VolumeRecord,
  st: NodeVolumeState,
  asked: { staging?: string; publish?: string },
): Promise<HealthProblem[]> {
  const device = await backend.attachedDevice(vol);
  if (!device) return [await lostDeviceProblem(vol, st)];
  const out = (await backend.deviceHealth?.(vol, device)) ?? [];
  const stagings = vol.accessType === 'mount' && (!asked.staging || asked.staging === st.stagingPath) ? [st.stagingPath] : [];
  const publishes = asked.publish ? (st.publications[asked.publish] ? [asked.publish] : []) : Object.keys(st.publications);
  const { problems, sound } = await mountProblems(vol, await mnt.deviceNumber(device), [
    ...stagings.map((p) => [p, 'StagingMountMissing', 'staged'] as const),
    ...publishes.map((p) => [p, 'PublishMountMissing', 'published'] as const),
  ]);
  out.push(...problems);
  // Every mount of a mount volume shows one filesystem (publications bind the staged one), so one look is enough.
  if (vol.accessType === 'mount' && sound) out.push(...(await filesystemFaults(sound.path, sound.entry)).map((f) => faultProblem(vol, sound.path, f)));
  return out;
}

/**
 * The backend finds no device of the volume. Either it is gone (detached: the mounts reach
 * nothing), or the mounts still read a live device the backend no longer knows as the
 * volume's (its storage was moved or renamed under it): pods still work, on storage the
 * driver cannot find, which is not the same advice.
 */
async function lostDeviceProblem(vol: VolumeRecord, st: NodeVolumeState): Promise<HealthProblem> {
  for (const p of [...(vol.accessType === 'mount' ? [st.stagingPath] : []), ...Object.keys(st.publications)]) {
    const m = await mnt.mountAt(p);
    const live = m && (await mnt.liveDeviceOf(m));
    if (live) {
      return {
        status: 'DEGRADED',
        reason: 'DeviceUnrecognised',
        message: `volume ${vol.id} is mounted at ${p} from ${live}, which the ${vol.backend} backend no longer recognises as the volume's device (was its storage moved or renamed?): the pods keep working on it; put the storage back where the backend keeps it, or copy the data out before unstaging`,
      };
    }
  }
  return {
    status: 'INACCESSIBLE',
    reason: 'DeviceDetached',
    message: `volume ${vol.id} is staged at ${st.stagingPath} but no longer attached on this node: unstage and stage it again (restart the pods using it)`,
  };
}

type Place = readonly [path: string, reason: string, what: string];

/** Which of the places no longer have the volume mounted, and one that still has (to look at its filesystem). */
async function mountProblems(vol: VolumeRecord, devno: string | undefined, places: Place[]): Promise<{ problems: HealthProblem[]; sound?: { path: string; entry: mnt.MountEntry } }> {
  const problems: HealthProblem[] = [];
  let sound: { path: string; entry: mnt.MountEntry } | undefined;
  for (const [p, reason, what] of places) {
    const m = await mnt.mountAt(p);
    if (m && (await mnt.isMountOf(m, devno))) {
      sound ??= { path: p, entry: m };
      continue;
    }
    problems.push({
      status: 'INACCESSIBLE',
      reason,
      message: m
        ? `volume ${vol.id} is ${what} at ${p}, but ${m.source} is mounted there now`
        : `volume ${vol.id} is ${what} at ${p}, but nothing is mounted there any more: pods see an empty directory; restart them`,
    });
  }
  return { problems, sound };
}

/**
 * A shut-down or emergency read-only filesystem stays so until it is mounted again: the
 * way back is unstage and stage (kubelet does both once the pods using it are gone).
 * Read-only counts as INACCESSIBLE: the volume was staged for writing and every write fails.
 * Recorded ext4 errors are DEGRADED: the filesystem still works, but something in it is
 * damaged and only e2fsck (which needs it unmounted) says what.
 */
function faultProblem(vol: VolumeRecord, where: string, f: FilesystemFault): HealthProblem {
  const remount = `restart the pods using volume ${vol.id} so it is unstaged and staged again`;
  switch (f.kind) {
    case 'shutdown':
      return { status: 'INACCESSIBLE', reason: 'FilesystemShutDown', message: `volume ${vol.id} at ${where}: ${f.detail}; every read and write fails: ${remount}, and check the kernel log for the I/O error behind it` };
    case 'readOnly':
      return { status: 'INACCESSIBLE', reason: 'FilesystemReadOnly', message: `volume ${vol.id} at ${where}: ${f.detail}; every write fails: ${remount} after checking it with fsck` };
    case 'errors':
      return { status: 'DEGRADED', reason: 'FilesystemErrors', message: `volume ${vol.id} at ${where}: ${f.detail}: unstage it and run e2fsck -f on it; restore from a snapshot if e2fsck reports lost files` };
  }
}
