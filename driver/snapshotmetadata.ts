// The CSI SnapshotMetadata service (changed-block tracking, for incremental backups): the
// allocated ranges of one snapshot and the changed ranges between two snapshots of one
// volume, streamed in pages. Backend-agnostic: a backend tells its ranges (SnapshotBlocks),
// this checks the request, finds the snapshots and pages the answer.
import type { DriverContext } from './context.js';
import type { Backend, BlockMap, SnapshotRecord } from './backends/backend.js';
import { BackendError } from './backends/backend.js';
import { invalidArgument, notFound, outOfRange } from './errors.js';
import { parseId } from './ids.js';
import { blocksIn, pages } from './blockranges.js';
import { INT64_MAX } from './validate.js';
import type * as T from '../proto/types.js';

/** Tuples per message when the caller names no max_results: ~16 bytes each, far below gRPC's message limit. */
export const DEFAULT_MAX_RESULTS = 4096;

type Response = T.GetMetadataAllocatedResponse & T.GetMetadataDeltaResponse;

/** starting_offset: a whole number, not negative (OUT_OF_RANGE, as the spec's table says). */
function startingOffset(v: string | number | undefined | null): bigint {
  const s = v === undefined || v === null || v === '' ? '0' : String(v);
  if (!/^-?\d+$/.test(s)) throw invalidArgument('starting_offset must be an integer number of bytes');
  const n = BigInt(s);
  if (n < 0n || n > INT64_MAX) throw outOfRange(`starting_offset ${s} is negative or beyond int64; it must lie within the volume`);
  return n;
}

function maxResults(v: number | undefined | null): number {
  const n = v ?? 0;
  if (!Number.isInteger(n) || n < 0) throw invalidArgument(`max_results must not be negative (0: the plugin chooses), not ${n}`);
  return n === 0 ? DEFAULT_MAX_RESULTS : n;
}

function* stream(map: BlockMap, start: bigint, max: number): Generator<Response> {
  if (start > map.capacityBytes) throw outOfRange(`starting_offset ${start} is past the end of the volume (${map.capacityBytes} bytes)`);
  const fixed = map.fixedBlockBytes;
  const head = { block_metadata_type: fixed ? ('FIXED_LENGTH' as const) : ('VARIABLE_LENGTH' as const), volume_capacity_bytes: map.capacityBytes.toString() };
  let sent = false;
  for (const page of pages(fixed ? blocksIn(map.ranges, fixed) : map.ranges, start, max)) {
    sent = true;
    yield { ...head, block_metadata: page.map((r) => ({ byte_offset: r.offset.toString(), size_bytes: r.length.toString() })) };
  }
  // No data after the offset still answers the volume's size and the style, in one empty message.
  if (!sent) yield { ...head, block_metadata: [] };
}

export class SnapshotMetadataService {
  constructor(private readonly ctx: DriverContext) {}

  async *GetMetadataAllocated(req: T.GetMetadataAllocatedRequest__Output): AsyncGenerator<Response> {
    const start = startingOffset(req.starting_offset);
    const max = maxResults(req.max_results);
    const { backend, snap } = await this.snapshot(req.snapshot_id, 'snapshot_id');
    const map = await blocksOf(backend).allocated(snap, req.secrets ?? {});
    yield* stream(map, start, max);
  }

  async *GetMetadataDelta(req: T.GetMetadataDeltaRequest__Output): AsyncGenerator<Response> {
    const start = startingOffset(req.starting_offset);
    const max = maxResults(req.max_results);
    const base = await this.snapshot(req.base_snapshot_id, 'base_snapshot_id');
    const target = await this.snapshot(req.target_snapshot_id, 'target_snapshot_id');
    if (base.snap.sourceVolumeId !== target.snap.sourceVolumeId || base.backend !== target.backend) {
      throw invalidArgument(
        `base snapshot ${base.snap.id} is of volume ${base.snap.sourceVolumeId} and target snapshot ${target.snap.id} of volume ` +
          `${target.snap.sourceVolumeId}: a delta is between two snapshots of the same volume`,
      );
    }
    if (takenAfter(base.snap, target.snap)) {
      throw invalidArgument(`base snapshot ${base.snap.id} was taken after target snapshot ${target.snap.id}: the base must be the older one`);
    }
    // Held while the backend reads the two snapshots (a computed delta reads them whole): a
    // snapshot deleted under the read would have its space reused by another volume.
    const map = await this.ctx.locks.with([base.snap.id, target.snap.id], 'GetMetadataDelta', () =>
      blocksOf(base.backend).delta(base.snap, target.snap, req.secrets ?? {}),
    );
    yield* stream(map, start, max);
  }

  private async snapshot(id: string, field: string): Promise<{ backend: Backend; snap: SnapshotRecord }> {
    const parsed = parseId(id, field, 'snap');
    const backend = parsed ? this.ctx.backends.get(parsed.backend) : undefined;
    const snap = backend ? await backend.getSnapshot(id) : undefined;
    if (!backend || !snap) throw notFound(`snapshot ${id} (${field}) does not exist`);
    return { backend, snap };
  }
}

function blocksOf(backend: Backend) {
  if (!backend.snapshotBlocks) throw new BackendError('unsupported', `the ${backend.name} backend cannot tell a snapshot's allocated or changed blocks`);
  return backend.snapshotBlocks;
}

function takenAfter(a: SnapshotRecord, b: SnapshotRecord): boolean {
  const sa = BigInt(a.createdAtSeconds);
  const sb = BigInt(b.createdAtSeconds);
  return sa > sb || (sa === sb && a.createdAtNanos > b.createdAtNanos);
}
