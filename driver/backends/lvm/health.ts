// What is wrong with an LVM volume or with the volume groups a node serves, read from lvm2's
// own reports (lv_attr, data/metadata percent, missing PVs, free extents). Pure functions of
// those reports, so the device-mapper cases this VM cannot run are checked in unit tests on
// the same report shapes lvm2 prints.
import type { HealthProblem, StorageProblem } from '../backend.js';
import type { LvInfo, VgHealthInfo } from './lvm.js';
import { mergeSameReason } from '../problems.js';

/** A thin pool this full (data or metadata, percent) is reported: soon writes to its volumes fail. */
export const THIN_POOL_USAGE_WARN_PERCENT = 90;
/** A thin pool this full has no block left for a write that needs a new one. */
export const THIN_POOL_FULL_PERCENT = 100;
/** A volume group with less free space than this (percent of its size) cannot take many more volumes. */
export const VG_FREE_WARN_PERCENT = 10;

// lv_attr positions (lvs(8)): 0 type, 4 state, 8 health.
const ATTR_STATE = 4;
const ATTR_HEALTH = 8;

const pct = (n: number | undefined) => (n === undefined ? '?' : `${n.toFixed(2)}%`);

/**
 * The thin pool's own condition as it affects a volume in it: full or failed pools refuse
 * writes that need new blocks (the filesystem above sees I/O errors), nearly full ones soon will.
 */
export function thinPoolProblems(pool: LvInfo): Array<{ severe: boolean; reason: string; message: string }> {
  const name = `${pool.vg}/${pool.name}`;
  const h = pool.attr[ATTR_HEALTH];
  const out: Array<{ severe: boolean; reason: string; message: string }> = [];
  if (h === 'F') out.push({ severe: true, reason: 'ThinPoolFailed', message: `thin pool ${name} has failed (lv_attr ${pool.attr}): no I/O reaches its volumes; repair it with lvconvert --repair` });
  const data = pool.dataPercent;
  if (h === 'D' || (data !== undefined && data >= THIN_POOL_FULL_PERCENT)) {
    out.push({ severe: true, reason: 'ThinPoolFull', message: `thin pool ${name} is out of data space (${pct(data)} used): writes that need a new block fail; extend the pool (lvextend) or delete volumes or snapshots in it` });
  } else if (data !== undefined && data >= THIN_POOL_USAGE_WARN_PERCENT) {
    out.push({ severe: false, reason: 'ThinPoolNearlyFull', message: `thin pool ${name} data is ${pct(data)} used (threshold ${THIN_POOL_USAGE_WARN_PERCENT}%): extend it (lvextend) before writes start to fail` });
  }
  const meta = pool.metadataPercent;
  if (h === 'M' || (meta !== undefined && meta >= THIN_POOL_FULL_PERCENT)) {
    out.push({ severe: true, reason: 'ThinPoolMetadataFull', message: `thin pool ${name} metadata is full (${pct(meta)} used): the pool is read-only; extend its metadata (lvextend --poolmetadatasize)` });
  } else if (meta !== undefined && meta >= THIN_POOL_USAGE_WARN_PERCENT) {
    out.push({ severe: false, reason: 'ThinPoolMetadataNearlyFull', message: `thin pool ${name} metadata is ${pct(meta)} used (threshold ${THIN_POOL_USAGE_WARN_PERCENT}%): extend it (lvextend --poolmetadatasize)` });
  }
  return out;
}

/**
 * The problems of a volume's LV. `pool` is its thin pool (thin volumes). Activation is not
 * judged here: whether an LV should be active depends on it being staged on this node, which
 * the node checks itself (its device gone is DeviceDetached); here only states that are wrong
 * whatever the node does.
 */
export function lvProblems(lv: LvInfo, pool: LvInfo | undefined, deviceMapper: boolean): HealthProblem[] {
  const name = `${lv.vg}/${lv.name}`;
  const out: HealthProblem[] = [];
  if (lv.attr[ATTR_HEALTH] === 'p') {
    out.push({ status: 'INACCESSIBLE', reason: 'PhysicalVolumeMissing', message: `${name} is partial: a physical volume of ${lv.vg} holding its extents is missing (pvs shows it as [unknown]); reconnect that disk` });
  }
  if (deviceMapper) {
    const state = lv.attr[ATTR_STATE];
    if (state === 's' || state === 'S') {
      out.push({ status: 'INACCESSIBLE', reason: 'DeviceSuspended', message: `${name} is suspended in device-mapper (lv_attr ${lv.attr}): its I/O waits until it is resumed (dmsetup resume, or lvchange --refresh)` });
    } else if (state === 'd' || state === 'i') {
      out.push({ status: 'INACCESSIBLE', reason: 'DeviceTableMissing', message: `${name} has a device-mapper device without a live table (lv_attr ${lv.attr}): lvchange --refresh ${name}` });
    }
    if (lv.attr[ATTR_HEALTH] === 'F') out.push({ status: 'INACCESSIBLE', reason: 'ThinPoolFailed', message: `${name} is in a failed thin pool (lv_attr ${lv.attr}): repair the pool with lvconvert --repair` });
  } else if (lv.segments.length !== 1) {
    out.push({ status: 'INACCESSIBLE', reason: 'SegmentedWithoutDeviceMapper', message: `${name} has ${lv.segments.length} segments; without device-mapper only a one-segment volume can be attached` });
  }
  for (const p of pool ? thinPoolProblems(pool) : []) {
    out.push({ status: p.severe ? 'INACCESSIBLE' : 'DEGRADED', reason: p.reason, message: `volume ${lv.name}: ${p.message}` });
  }
  // A failed pool shows on the LV and the pool alike: one entry naming both.
  return mergeSameReason(out);
}

/** The problems of the volume groups (missing, missing PVs, nearly full) and of their thin pools. */
export function vgProblems(missing: string[], vgs: VgHealthInfo[], pools: LvInfo[]): StorageProblem[] {
  const out: StorageProblem[] = [];
  for (const vg of missing) {
    out.push({ status: 'STORAGE_UNREACHABLE', reason: 'VolumeGroupMissing', message: `volume group ${vg} is not found on this node's devices: its volumes cannot be attached; reconnect its disks` });
  }
  for (const vg of vgs) {
    if (vg.missingPvs > 0) {
      out.push({
        status: 'STORAGE_DEGRADED',
        reason: 'PhysicalVolumeMissing',
        message: `volume group ${vg.name} is missing ${vg.missingPvs} physical volume(s)${vg.missingPvNames.length ? ` (last seen as ${vg.missingPvNames.join(', ')})` : ''}: volumes on them are inaccessible; reconnect the disk, or vgreduce --removemissing to give them up`,
      });
    }
    if (vg.sizeBytes > 0n && vg.freeBytes * 100n < vg.sizeBytes * BigInt(VG_FREE_WARN_PERCENT)) {
      out.push({
        status: 'STORAGE_DEGRADED',
        reason: 'VolumeGroupNearlyFull',
        message: `volume group ${vg.name} has ${vg.freeBytes} of ${vg.sizeBytes} bytes free (under ${VG_FREE_WARN_PERCENT}%): new volumes and expansions will soon fail; add a disk (vgextend) or delete volumes`,
      });
    }
  }
  // A full pool is still reachable (reads work, writes needing no new block too): degraded.
  for (const pool of pools) for (const p of thinPoolProblems(pool)) out.push({ status: 'STORAGE_DEGRADED', reason: p.reason, message: p.message });
  return mergeSameReason(out);
}
