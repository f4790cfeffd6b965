// What the node sees of a volume's health beyond its backend's view: whether the device is
// still attached and the staging and publish mounts are still the volume's. The health
// helper tier (filesystem errors, writability) grows here, shared by every backend.
import type { HealthProblem, NodeBackend, VolumeRecord } from './backends/backend.js';
import type { NodeVolumeState } from './nodestate.js';
import * as mnt from './host/mount.js';

/** The CSI rule: one entry per (status, reason); the first message found is kept. */
export function uniqueProblems(problems: HealthProblem[]): HealthProblem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const k = `${p.status}\0${p.reason}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

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
  const out: HealthProblem[] = [];
  const device = await backend.attachedDevice(vol);
  if (!device) {
    out.push({
      status: 'INACCESSIBLE',
      reason: 'DeviceDetached',
      message: `volume ${vol.id} is staged at ${st.stagingPath} but no longer attached on this node: unstage and stage it again (restart the pods using it)`,
    });
    return out;
  }
  const devno = await mnt.deviceNumber(device);
  const stagings = vol.accessType === 'mount' && (!asked.staging || asked.staging === st.stagingPath) ? [st.stagingPath] : [];
  const publishes = asked.publish ? (st.publications[asked.publish] ? [asked.publish] : []) : Object.keys(st.publications);
  for (const [p, reason, what] of [
    ...stagings.map((p) => [p, 'StagingMountMissing', 'staged'] as const),
    ...publishes.map((p) => [p, 'PublishMountMissing', 'published'] as const),
  ]) {
    const m = await mnt.mountAt(p);
    if (!m || !(await mnt.isMountOf(m, devno))) {
      out.push({
        status: 'INACCESSIBLE',
        reason,
        message: m
          ? `volume ${vol.id} is ${what} at ${p}, but ${m.source} is mounted there now`
          : `volume ${vol.id} is ${what} at ${p}, but nothing is mounted there any more: pods see an empty directory; restart them`,
      });
    }
  }
  return out;
}
