// The LVM backend keeps each volume's and snapshot's record in its LV's tags (base64url JSON
// in chunks, since a tag holds at most 1024 characters). Anyone with lvm2 can change tags,
// and a half-edited or hand-made LV must cost only itself: reading a record checks its
// shape and says what is wrong, and the backend leaves such an LV out of listings.
import type { GroupSnapshotRecord, SnapshotRecord, VolumeRecord } from '../backend.js';
import type { LvInfo } from './lvm.js';
import { recordFromJson, recordToJson } from '../../host/atomic.js';

// The tag's text stays 'tscsi.kind': LVs made by earlier versions carry it.
export const TAG_HOLDS = 'tscsi.kind';
export const TAG_DIRTY = 'tscsi.dirty';
export const TAG_RECORD = 'tscsi.r';
const CHUNK = 900; // LVM tags are at most 1024 characters

/** What record an LV of ours holds: a volume's or a snapshot's. */
export type LvHolds = 'vol' | 'snap';

export interface SnapshotWithGroup extends SnapshotRecord {
  group?: GroupSnapshotRecord;
}

export function recordTags(holds: LvHolds, rec: object): string[] {
  const b64 = Buffer.from(recordToJson(rec)).toString('base64url');
  const tags = [`${TAG_HOLDS}=${holds}`];
  for (let i = 0; i * CHUNK < b64.length; i++) tags.push(`${TAG_RECORD}${i}=${b64.slice(i * CHUNK, (i + 1) * CHUNK)}`);
  return tags;
}

/**
 * lvcreate's tag arguments for a new LV holding `rec`: its record, plus the dirty mark that
 * stays until the LV is fully made, so a crash half-way leaves an LV start-up knows to remove.
 */
export function newLvTagArgs(holds: LvHolds, rec: object): string[] {
  return [...recordTags(holds, rec), TAG_DIRTY].flatMap((t) => ['--addtag', t]);
}

export function holdsOf(lv: LvInfo): LvHolds | undefined {
  const t = lv.tags.find((x) => x.startsWith(`${TAG_HOLDS}=`));
  const k = t?.slice(TAG_HOLDS.length + 1);
  return k === 'vol' || k === 'snap' ? k : undefined;
}

/** The JSON the record tags hold, joined in chunk order; throws when there is none or it does not parse. */
function recordJson(lv: LvInfo): Record<string, unknown> {
  const parts = lv.tags
    .filter((t) => /^tscsi\.r\d+=/.test(t))
    .map((t) => {
      const eq = t.indexOf('=');
      return { i: Number(t.slice(TAG_RECORD.length, eq)), v: t.slice(eq + 1) };
    })
    .sort((a, b) => a.i - b.i);
  if (parts.length === 0) throw new Error('it has no record tags');
  if (parts.some((p, i) => p.i !== i)) throw new Error(`its record tags are not one run of chunks (${parts.map((p) => p.i).join(',')})`);
  const r: unknown = recordFromJson(Buffer.from(parts.map((p) => p.v).join(''), 'base64url').toString('utf8'));
  if (typeof r !== 'object' || r === null || Array.isArray(r)) throw new Error('its record is not a JSON object');
  return r as Record<string, unknown>;
}

const isMap = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Throws naming the first field that does not have its type. */
function mustHave(r: Record<string, unknown>, fields: Record<string, (v: unknown) => boolean>): void {
  for (const [k, ok] of Object.entries(fields)) if (!ok(r[k])) throw new Error(`its record's ${k} is missing or malformed`);
}

const str = (v: unknown) => typeof v === 'string';
const big = (v: unknown) => typeof v === 'bigint';
const num = (v: unknown) => typeof v === 'number' && Number.isInteger(v);

/** The volume record in an LV's tags; throws saying why it cannot be read. */
export function volumeRecordOf(lv: LvInfo): VolumeRecord {
  const r = recordJson(lv);
  mustHave(r, {
    id: (v) => v === lv.name,
    name: str,
    backend: str,
    accessType: (v) => v === 'mount' || v === 'block',
    fsType: str,
    parameters: isMap,
    mutableParameters: isMap,
    topology: isMap,
    published: isMap,
    createdAt: str,
    contentSource: (v) => v === undefined || (isMap(v) && str((v as { id?: unknown }).id)),
  });
  return r as unknown as VolumeRecord;
}

function groupOk(v: unknown): boolean {
  if (!isMap(v)) return false;
  const g = v as Record<string, unknown>;
  return str(g.id) && str(g.name) && Array.isArray(g.snapshotIds) && g.snapshotIds.every(str) && big(g.createdAtSeconds) && num(g.createdAtNanos) && isMap(g.parameters);
}

/** The snapshot record (with its group's, for members) in an LV's tags; throws saying why it cannot be read. */
export function snapshotRecordOf(lv: LvInfo): SnapshotWithGroup {
  const r = recordJson(lv);
  mustHave(r, {
    id: (v) => v === lv.name,
    name: str,
    sourceVolumeId: str,
    sizeBytes: big,
    createdAtSeconds: big,
    createdAtNanos: num,
    groupSnapshotId: str,
    parameters: isMap,
    group: (v) => v === undefined || groupOk(v),
  });
  return r as unknown as SnapshotWithGroup;
}
