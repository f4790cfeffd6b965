// Named fail points: compiled in, inert unless TSCSI_FAILPOINTS names them. A test arms one,
// runs an RPC, and the driver dies at exactly that step as in a container crash (the driver
// and every child it started die together), so the test can prove where it killed and then
// show that a restarted driver finishes the half-done work or rolls it back.
//
//   TSCSI_FAILPOINTS=loop.create.afterImage             kill at that step boundary
//   TSCSI_FAILPOINTS=host.mkfs:during                    kill while mkfs runs (right after it started)
//   TSCSI_FAILPOINTS=host.copy:during=300                kill 300 ms into the copy
import fs from 'node:fs';

interface Point {
  /** What has happened and what has not when the kill comes. */
  what: string;
  /** Wraps a host tool: may also be armed with :during (kill while the tool runs). */
  tool?: true;
}

/** Every fail point the driver has, so a test can iterate them all. */
export const FAILPOINTS = {
  'rpc.beforeReply': { what: 'any RPC: the work is done, the reply is not sent' },
  'atomic.beforeRename': { what: 'any record write: the temporary file is written and synced, not renamed into place' },

  'loop.create.afterTmp': { what: 'CreateVolume (loop): the temporary image exists (empty or cloned), not sized' },
  'loop.create.afterImage': { what: 'CreateVolume (loop): the image is in place, its record is not written' },
  'loop.clone.frozen': { what: 'CreateVolume from a volume (loop): the source is frozen, nothing copied yet' },
  'loop.snapshot.frozen': { what: 'CreateSnapshot (loop): the sources are frozen, nothing cloned yet' },
  'loop.snapshot.afterClone': { what: 'CreateSnapshot (loop): the temporary clones exist, the sources are still frozen' },
  'loop.snapshot.afterImage': { what: 'CreateSnapshot (loop): the images are in place, their records are not written' },
  'loop.deleteSnapshot.afterImage': { what: 'DeleteSnapshot (loop): the image is removed, the record is not' },
  'loop.delete.afterImage': { what: 'DeleteVolume (loop): the image is removed, the record is not' },
  'loop.expand.afterTruncate': { what: 'ControllerExpandVolume (loop): the image is grown, the record still has the old size' },
  'loop.save.afterRecord': { what: 'ControllerPublish/Unpublish/ModifyVolume (loop): the record is written, the device not yet changed' },

  'group.create.afterMembers': { what: 'CreateVolumeGroupSnapshot: the member snapshots exist, the group record does not' },
  'group.delete.afterMembers': { what: 'DeleteVolumeGroupSnapshot: the members are deleted, the group record is not' },

  'node.stage.afterRecord': { what: 'NodeStageVolume: the staging is recorded, nothing attached' },
  'node.stage.afterAttach': { what: 'NodeStageVolume: recorded and attached, nothing formatted or mounted' },
  'node.stage.afterMkfs': { what: 'NodeStageVolume: the filesystem is made, not mounted' },
  'node.stage.afterMount': { what: 'NodeStageVolume: the filesystem is mounted, not grown to the device' },
  'node.unstage.afterUmount': { what: 'NodeUnstageVolume: the staging path is unmounted, the device still attached' },
  'node.unstage.afterDetach': { what: 'NodeUnstageVolume: the device is detached, the staging record remains' },
  'node.publish.afterRecord': { what: 'NodePublishVolume: the publication is recorded, the target not made or mounted' },
  'node.publish.afterMount': { what: 'NodePublishVolume: recorded and bind-mounted, the reply not sent' },
  'node.unpublish.afterUmount': { what: 'NodeUnpublishVolume: the target is unmounted, the publication still recorded' },
  'node.expand.afterRefresh': { what: 'NodeExpandVolume: the device shows the new size, the filesystem is not grown' },

  'host.mkfs': { what: 'mkfs (NodeStageVolume)', tool: true },
  'host.growfs': { what: 'resize2fs / xfs_growfs / btrfs resize (NodeStage, NodeExpandVolume)', tool: true },
  'host.copy': { what: 'dd copy of a whole device (LVM clones and snapshots)', tool: true },
  'host.wipe': { what: 'blkdiscard / dd zeroing of a device (LVM create and delete)', tool: true },

  'lvm.create.afterLvcreate': { what: 'CreateVolume (lvm): the LV exists, tagged dirty, not wiped or copied' },
  'lvm.create.afterCopy': { what: 'CreateVolume (lvm): wiped (and copied), still tagged dirty' },
  'lvm.delete.afterWipe': { what: 'DeleteVolume/DeleteSnapshot (lvm): the LV is wiped, not removed' },
  'lvm.snapshot.afterLvcreate': { what: 'CreateSnapshot (lvm): the snapshot LVs exist, tagged dirty, nothing copied' },
  'lvm.snapshot.afterCopy': { what: 'CreateSnapshot (lvm): copied, still tagged dirty' },
  'lvm.expand.afterLvextend': { what: 'ControllerExpandVolume (lvm): the LV is grown, its record tag is not' },

  'host.rbd': { what: 'rbd flatten (CreateVolume from a snapshot or volume past maxCloneDepth)', tool: true },

  'rbd.create.afterImage': { what: 'CreateVolume (rbd): the image is created or cloned (and flattened), not resized, no record' },
  'rbd.create.beforeRecord': { what: 'CreateVolume (rbd): the image is complete and sized, the clone\'s temporary snapshot removed, no record' },
  'rbd.clone.frozen': { what: 'CreateVolume from a volume (rbd): the source is frozen, its temporary snapshot not taken' },
  'rbd.clone.afterSnap': { what: 'CreateVolume from a volume (rbd): the temporary snapshot of the source exists, the source still frozen' },
  'rbd.snapshot.frozen': { what: 'CreateSnapshot (rbd): the sources are frozen, nothing cut' },
  'rbd.snapshot.afterCut': { what: 'CreateSnapshot (rbd): the cuts (snapshots of the sources) exist, the sources still frozen' },
  'rbd.snapshot.afterClone': { what: 'CreateSnapshot (rbd): the snapshot image is cloned from the cut, the cut still on the source' },
  'rbd.snapshot.afterCutRm': { what: 'CreateSnapshot (rbd): the cut is removed from the source (trashed while cloned), the image has no snapshot of its own' },
  'rbd.snapshot.beforeRecord': { what: 'CreateSnapshot (rbd): the snapshot image has its own snapshot, its record is not written' },
  'rbd.expand.afterResize': { what: 'ControllerExpandVolume (rbd): the image is grown, its record still has the old size' },
  'rbd.delete.afterMark': { what: 'DeleteVolume/DeleteSnapshot (rbd): the image is marked deleting, nothing removed' },
  'rbd.delete.afterSnaps': { what: 'DeleteVolume/DeleteSnapshot (rbd): the image\'s snapshots are removed, the image is not' },
  'rbd.delete.afterTrash': { what: 'DeleteVolume (rbd): the image, whose trashed snapshots have clones, is moved to the RBD trash' },
  'rbd.delete.afterRemove': { what: 'DeleteVolume/DeleteSnapshot (rbd): the image is removed, the RBD trash not swept (a parent may wait there)' },
  'rbd.fuse.afterSpawn': { what: 'NodeStageVolume (rbd, fuse mapper): rbd-fuse is started and recorded, the image not shown, no loop device' },
  'rbd.fuse.afterLoop': { what: 'NodeStageVolume (rbd, fuse mapper): the loop device is attached, the mapping record does not name it yet' },
  'rbd.fuse.afterDetach': { what: 'NodeUnstageVolume (rbd, fuse mapper): the loop device is detached, rbd-fuse still mounted' },
  'rbd.fuse.afterUnmount': { what: 'NodeUnstageVolume (rbd, fuse mapper): rbd-fuse is unmounted, its mapping record and directory remain' },
} as const satisfies Record<string, Point>;

export type FailpointName = keyof typeof FAILPOINTS;

/** The RPCs that change state: rpc.beforeReply fires only for these (never for Probe, Get*, List*). */
export const MUTATING_RPCS = new Set([
  'CreateVolume', 'DeleteVolume', 'ControllerPublishVolume', 'ControllerUnpublishVolume', 'CreateSnapshot', 'DeleteSnapshot',
  'ControllerExpandVolume', 'ControllerModifyVolume', 'CreateVolumeGroupSnapshot', 'DeleteVolumeGroupSnapshot',
  'NodeStageVolume', 'NodeUnstageVolume', 'NodePublishVolume', 'NodeUnpublishVolume', 'NodeExpandVolume',
]);

interface Armed {
  during: boolean;
  delayMs: number;
}

/** Parses TSCSI_FAILPOINTS; an unknown name is an error, so a typo never passes as "survived". */
export function parseFailpoints(spec: string | undefined): Map<FailpointName, Armed> {
  const out = new Map<FailpointName, Armed>();
  for (const item of (spec ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^([A-Za-z0-9.]+)(?::during(?:=(\d+))?)?$/.exec(item);
    if (!m || !(m[1] in FAILPOINTS)) throw new Error(`TSCSI_FAILPOINTS: unknown fail point ${JSON.stringify(item)}; known: ${Object.keys(FAILPOINTS).join(', ')}`);
    const name = m[1] as FailpointName;
    const during = item.includes(':during');
    if (during && !(FAILPOINTS[name] as Point).tool) throw new Error(`TSCSI_FAILPOINTS: ${name} does not run a tool; :during applies to host.* points only`);
    out.set(name, { during, delayMs: Number(m[2] ?? 0) });
  }
  return out;
}

const armed = parseFailpoints(process.env.TSCSI_FAILPOINTS);

/** Start-up check: throws on a bad TSCSI_FAILPOINTS (parsed at import) and says which are armed. */
export function armedFailpoints(): string[] {
  return [...armed].map(([n, a]) => (a.during ? `${n}:during=${a.delayMs}` : n));
}

/** One JSON line like pino's, written synchronously: the kill follows at once. */
function announce(name: string, extra: Record<string, unknown>): void {
  const line = JSON.stringify({ level: 50, time: Date.now(), pid: process.pid, component: 'tscsi-driver', failpoint: name, ...extra, msg: `fail point ${name}: killing the driver and its children` });
  fs.writeSync(2, line + '\n');
}

function processGroupOf(pid: number | 'self'): number | undefined {
  try {
    // /proc/PID/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces, so split after the last ")".
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
  } catch {
    return undefined;
  }
}

function processGroup(): number | undefined {
  return processGroupOf('self');
}

function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const ppid = Number(fs.readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1].split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(d)]);
    } catch {
      // exited meanwhile
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(root);
  return out;
}

/**
 * Dies as a container does: everything at once. When the driver leads its process group
 * (a container's init, or a test harness that starts it detached) the whole group gets
 * SIGKILL in one kill(2); otherwise its descendants are killed first, then itself.
 */
function crash(): never {
  const leader = processGroup() === process.pid;
  // Helpers started detached (rbd-fuse leaves the group so that a plain stop of the driver
  // does not take the volumes' I/O with it) are not in the group: a container takes them too.
  for (const p of descendants(process.pid)) {
    if (leader && processGroupOf(p) === process.pid) continue;
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  process.kill(leader ? -process.pid : process.pid, 'SIGKILL');
  throw new Error('unreachable: SIGKILL did not kill the driver');
}

/** A step boundary: kills the driver here when this point is armed (without :during). */
export function failpoint(name: FailpointName): void {
  const a = armed.get(name);
  if (!a || a.during) return;
  announce(name, {});
  crash();
}

/**
 * Called by run() right after a tool's process started: when the point is armed with
 * :during, kills the driver and the tool while the tool runs (after delayMs). The log line
 * says whether the tool was still running at the kill, which is what a test asserts.
 */
export function failpointDuring(name: FailpointName, child: { pid?: number; exitCode: number | null; signalCode?: string | null }, command: string): void {
  const a = armed.get(name);
  if (!a?.during) return;
  const kill = () => {
    const running = child.exitCode === null && !child.signalCode && child.pid !== undefined && fs.existsSync(`/proc/${child.pid}`);
    announce(`${name}:during`, { toolPid: child.pid, tool: command.slice(0, 200), toolRunning: running, delayMs: a.delayMs });
    crash();
  };
  if (a.delayMs > 0) setTimeout(kill, a.delayMs);
  else kill();
}
