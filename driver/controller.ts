// The CSI Controller service: validate, lock, call the backend, map errors.
import type { ControllerBackend, VolumeRecord, SnapshotRecord } from './backends/backend.js';
import { DriverContext, timestamp, nowTimestamp } from './context.js';
import { invalidArgument, notFound, alreadyExists, failedPrecondition, outOfRange, resourceExhausted } from './errors.js';
import { deriveId, locationOf, paginate, parseId, unlocated } from './ids.js';
import {
  checkCapabilities,
  checkCapability,
  checkName,
  checkStringMap,
  parseRange,
  SINGLE_NODE_MODES,
  READ_ONLY_MODES,
  type Capability,
  type CapRange,
} from './validate.js';
import { MIN_FS_BYTES, type FsType } from './host/fs.js';
import type * as T from '../proto/types.js';
import { MiB } from '../lib/size.js';

/** The most entries one List* response carries (max_entries 0 or larger gets a next_token), far below the gRPC send limit. */
export const LIST_PAGE_MAX = 1000;
const pageSize = (maxEntries: number) => (maxEntries < 0 ? maxEntries : Math.min(maxEntries || LIST_PAGE_MAX, LIST_PAGE_MAX));
const roundUp = (n: bigint, unit: bigint) => ((n + unit - 1n) / unit) * unit;
// Parameters the provisioner adds itself (--extra-create-metadata): accepted and stored, never interpreted.
const CO_PARAMETER_PREFIX = 'csi.storage.k8s.io/';

/**
 * A snapshot class's parameters, for CreateSnapshot and CreateVolumeGroupSnapshot alike: no
 * backend takes any yet, so anything but the CO's own keys is a typo that must not pass silently.
 */
export function checkSnapshotParameters(map: Record<string, string> | undefined | null): Record<string, string> {
  const params = checkStringMap(map, 'parameters');
  for (const k of Object.keys(params)) {
    if (!k.startsWith(CO_PARAMETER_PREFIX)) throw invalidArgument(`snapshot parameter ${JSON.stringify(k)} is not supported`);
  }
  return params;
}
const DRIVER_PARAMETERS = new Set(['backend', 'mkfsOptions']);

/** mkfsOptions reach mkfs as arguments: dash-options and their values only, never a path. */
function checkMkfsOptions(raw: string | undefined): void {
  if (raw === undefined) return;
  const tokens = raw.split(/\s+/).filter(Boolean);
  tokens.forEach((t, i) => {
    const isOption = /^-{1,2}[A-Za-z][A-Za-z0-9-]*$/.test(t);
    const isValue = /^[A-Za-z0-9_=,.:^+-]+$/.test(t) && i > 0 && tokens[i - 1].startsWith('-') && !t.startsWith('-');
    if (!isOption && !isValue) throw invalidArgument(`mkfsOptions token ${JSON.stringify(t.slice(0, 40))} is not allowed: options and their values only, no paths`);
  });
}

export const CONTROLLER_CAPABILITIES = [
  'CREATE_DELETE_VOLUME',
  'PUBLISH_UNPUBLISH_VOLUME',
  'LIST_VOLUMES',
  'GET_CAPACITY',
  'CREATE_DELETE_SNAPSHOT',
  'LIST_SNAPSHOTS',
  'CLONE_VOLUME',
  'PUBLISH_READONLY',
  'EXPAND_VOLUME',
  'LIST_VOLUMES_PUBLISHED_NODES',
  'GET_VOLUME',
  'SINGLE_NODE_MULTI_WRITER',
  'MODIFY_VOLUME',
  'GET_SNAPSHOT',
  'GET_VOLUME_HEALTH',
  'LIST_VOLUME_HEALTH',
] as const;

export function volumeMessage(v: VolumeRecord) {
  return {
    capacity_bytes: v.capacityBytes.toString(),
    volume_id: v.id,
    volume_context: { backend: v.backend, ...(v.fsType ? { fsType: v.fsType } : {}) },
    content_source: v.contentSource
      ? v.contentSource.type === 'snapshot'
        ? { snapshot: { snapshot_id: v.contentSource.id } }
        : { volume: { volume_id: v.contentSource.id } }
      : null,
    accessible_topology: Object.keys(v.topology).length ? [{ segments: v.topology }] : [],
  };
}

/**
 * Where volumes made from a backend's snapshots can be used: a node-local backend keeps its
 * snapshots beside their sources on this node; a shared backend's snapshots are usable
 * everywhere (no topology, as the spec reads an absent one).
 */
export function snapshotTopology(backend: ControllerBackend, nodeTopology: Record<string, string>): Record<string, string>[] {
  return backend.nodeLocal && Object.keys(nodeTopology).length ? [nodeTopology] : [];
}

export function snapshotMessage(s: SnapshotRecord, topology: Record<string, string>[]) {
  return {
    size_bytes: s.sizeBytes.toString(),
    snapshot_id: s.id,
    source_volume_id: s.sourceVolumeId,
    creation_time: timestamp(s.createdAtSeconds, s.createdAtNanos),
    ready_to_use: true,
    group_snapshot_id: s.groupSnapshotId,
    accessible_topology: topology.map((segments) => ({ segments })),
  };
}

/** Splits parameters into the backend's own and the CO's metadata, refusing unknown keys early. */
function backendParameters(backend: ControllerBackend, params: Record<string, string>): void {
  checkMkfsOptions(params.mkfsOptions);
  const own: Record<string, string> = {};
  for (const [k, v] of Object.entries(params)) {
    if (DRIVER_PARAMETERS.has(k) || k.startsWith(CO_PARAMETER_PREFIX)) continue;
    own[k] = v;
  }
  try {
    backend.validateParameters(own);
  } catch (err) {
    throw invalidArgument(err instanceof Error ? err.message : String(err));
  }
}

function checkMutable(backend: ControllerBackend, m: Record<string, string>): void {
  for (const [k, v] of Object.entries(m)) {
    // own keys only: a key such as "valueOf" must not find Object.prototype's function
    const allowed = Object.hasOwn(backend.mutableParameters, k) ? backend.mutableParameters[k] : undefined;
    if (!allowed) {
      throw invalidArgument(
        `mutable parameter ${JSON.stringify(k)} is not supported by the ${backend.name} backend; supported: ${Object.keys(backend.mutableParameters).join(', ') || 'none'}`,
      );
    }
    if (typeof allowed === 'function') {
      const wrong = allowed(v);
      if (wrong !== undefined) throw invalidArgument(`mutable parameter ${k} ${wrong}`);
    } else if (!allowed.includes(v)) {
      throw invalidArgument(`mutable parameter ${k} must be one of ${allowed.join(', ')}, not ${JSON.stringify(v)}`);
    }
  }
}

function sameMap(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}

type ContentSource = NonNullable<VolumeRecord['contentSource']>;

/** A checked CreateVolume request: what to make and with which backend. */
interface VolumeRequest {
  name: string;
  backend: ControllerBackend;
  params: Record<string, string>;
  mutable: Record<string, string>;
  accessType: VolumeRecord['accessType'];
  fsType: FsType | '';
}

/** The content source of a request: absent (bytes 0), or what it is, its size, and the lock it needs. */
interface SourceOf {
  ref?: ContentSource;
  bytes: bigint;
  lockKeys: string[];
}

/** Whether a volume found under the request's name is the one asked for (an idempotent retry). */
function sameVolume(existing: VolumeRecord, want: VolumeRequest, source: SourceOf, range: CapRange): boolean {
  return (
    existing.name === want.name &&
    existing.capacityBytes >= range.required &&
    (range.limit === 0n || existing.capacityBytes <= range.limit) &&
    existing.accessType === want.accessType &&
    (want.accessType === 'block' || existing.fsType === want.fsType) &&
    existing.contentSource?.type === source.ref?.type &&
    existing.contentSource?.id === source.ref?.id &&
    sameMap(existing.parameters, want.params)
  );
}

/**
 * The object a create's name already names: where the new ID says, else anywhere (the ID
 * without its location, which the backend searches for): a name is one object whatever
 * its location, and the same name asked for in another place is ALREADY_EXISTS.
 */
async function lookUpByName<T>(id: string, get: (id: string) => Promise<T | undefined>): Promise<T | undefined> {
  return (await get(id)) ?? (unlocated(id) !== id ? await get(unlocated(id)) : undefined);
}

function topologyMatches(want: Record<string, string>, have: Record<string, string>): boolean {
  return Object.entries(want).every(([k, v]) => have[k] === v);
}

export class ControllerService {
  /** Serialises ControllerPublish per node so the attach limit cannot be overrun by a burst. */
  private publishChain = new Map<string, Promise<unknown>>();

  constructor(private readonly ctx: DriverContext) {}

  async ControllerGetCapabilities(): Promise<T.ControllerGetCapabilitiesResponse> {
    return { capabilities: CONTROLLER_CAPABILITIES.map((type) => ({ rpc: { type } })) };
  }

  async CreateVolume(req: T.CreateVolumeRequest__Output): Promise<T.CreateVolumeResponse> {
    const want = this.volumeRequest(req);
    this.checkTopology(want.backend, req.accessibility_requirements);
    const source = await this.contentSource(want.backend, req.volume_content_source);
    const range = parseRange(req.capacity_range);
    const size = await this.volumeSize(want, source, range);
    const id = deriveId('vol', want.backend.name, want.name, want.backend.locationOf?.(want.params));
    // Long work (copies, wipes) runs on when the caller's deadline passes; a retry sees it finish.
    const work = () =>
      this.ctx.locks.with([id, ...source.lockKeys], 'CreateVolume', async () => {
        const existing = await lookUpByName(id, (x) => want.backend.getVolume(x));
        if (!existing) return { volume: volumeMessage(await this.provision(id, want, source, size, req.secrets ?? {})) };
        if (!sameVolume(existing, want, source, range)) {
          throw alreadyExists(`a volume named ${JSON.stringify(want.name)} already exists (${existing.id}) with a different size, access type, filesystem, source or parameters`);
        }
        return { volume: volumeMessage(existing) };
      });
    return this.ctx.background.run(id, 'CreateVolume', work);
  }

  /** The request's name, capabilities and parameters, checked against the backend they choose. */
  private volumeRequest(req: T.CreateVolumeRequest__Output): VolumeRequest {
    checkName(req.name);
    const caps = checkCapabilities(req.volume_capabilities as Capability[]);
    const params = checkStringMap(req.parameters, 'parameters');
    const mutable = checkStringMap(req.mutable_parameters, 'mutable_parameters');
    const backend = this.ctx.backendFor(params.backend ?? this.ctx.config.defaultBackend);
    backendParameters(backend, params);
    checkMutable(backend, mutable);
    const refusal = caps.map((c) => backend.accessRefusal?.(c.accessType, c.mode)).find(Boolean);
    if (refusal) throw invalidArgument(refusal);
    const accessType = caps[0].accessType;
    const fsType: FsType | '' = accessType === 'mount' ? ((caps.find((c) => c.fsType)?.fsType as FsType) ?? this.ctx.config.defaultFsType) : '';
    return { name: req.name, backend, params, mutable, accessType, fsType };
  }

  /** A node-local backend can only provision (volumes and snapshots) where it runs. */
  private checkTopology(backend: ControllerBackend, requirements: T.CreateVolumeRequest__Output['accessibility_requirements'], what = 'volume'): void {
    const requisite = (requirements?.requisite ?? []).map((t) => t.segments ?? {});
    if (backend.nodeLocal && requisite.length > 0 && !requisite.some((t) => topologyMatches(t, this.ctx.topology))) {
      throw resourceExhausted(`${what} cannot be provisioned in the requested topology: this ${backend.name} backend serves only ${JSON.stringify(this.ctx.topology)}`);
    }
  }

  private snapshotOut(backend: ControllerBackend, s: SnapshotRecord) {
    return snapshotMessage(s, snapshotTopology(backend, this.ctx.topology));
  }

  /** The snapshot or volume to copy from, which must exist and live in the same backend. */
  private async contentSource(backend: ControllerBackend, cs: T.CreateVolumeRequest__Output['volume_content_source']): Promise<SourceOf> {
    const found = cs?.snapshot
      ? await this.sourceRecord('snapshot', cs.snapshot.snapshot_id, 'volume_content_source.snapshot.snapshot_id')
      : cs?.volume
        ? await this.sourceRecord('volume', cs.volume.volume_id, 'volume_content_source.volume.volume_id')
        : undefined;
    if (!found) return { bytes: 0n, lockKeys: [] };
    const { type, id } = found.ref;
    if (found.backend !== backend) throw invalidArgument(`source ${type} ${id} belongs to the ${found.backend.name} backend, not ${backend.name}`);
    return { ref: found.ref, bytes: found.bytes, lockKeys: [id] };
  }

  private async sourceRecord(type: 'snapshot' | 'volume', id: string, field: string): Promise<{ ref: ContentSource; backend: ControllerBackend; bytes: bigint }> {
    if (type === 'snapshot') {
      const found = await this.ctx.findSnapshot(id, field);
      if (!found) throw notFound(`source snapshot ${id} does not exist`);
      return { ref: { type, id }, backend: found.backend, bytes: found.snap.sizeBytes };
    }
    const found = await this.ctx.findVolume(id, field);
    if (!found) throw notFound(`source volume ${id} does not exist`);
    return { ref: { type, id }, backend: found.backend, bytes: found.vol.capacityBytes };
  }

  /** At least what was asked, what the filesystem needs and what the source holds, in the backend's units. */
  private async volumeSize(want: VolumeRequest, source: SourceOf, range: CapRange): Promise<bigint> {
    const { fsType } = want;
    const fallback = source.bytes > 0n ? source.bytes : this.ctx.config.defaultVolumeBytes;
    let size = range.required > 0n ? range.required : range.limit > 0n && range.limit < fallback ? range.limit : fallback;
    const min = fsType ? MIN_FS_BYTES[fsType] : MiB;
    if (size < min) size = min;
    if (size < source.bytes) size = source.bytes;
    const backendUnit = await want.backend.granularity(want.params);
    const unit = backendUnit > MiB ? backendUnit : MiB;
    size = roundUp(size, unit);
    if (range.limit > 0n && size > range.limit) {
      throw outOfRange(
        `cannot provision within limit_bytes ${range.limit}: the volume needs ${size} bytes (${fsType ? `${fsType} needs at least ${min}; ` : ''}sizes are whole multiples of ${unit} bytes${source.bytes ? `; the source holds ${source.bytes}` : ''})`,
      );
    }
    return size;
  }

  /** Makes the volume once the backend has room for it; runs under the volume's lock. */
  private async provision(id: string, want: VolumeRequest, source: SourceOf, size: bigint, secrets: Record<string, string>): Promise<VolumeRecord> {
    const { backend } = want;
    const cap = await backend.capacity(want.params);
    if (cap.maximumVolumeBytes !== undefined && size > cap.maximumVolumeBytes) {
      throw outOfRange(`${size} bytes is more than the largest volume the ${backend.name} backend makes (${cap.maximumVolumeBytes})`);
    }
    if (size > cap.availableBytes) {
      throw resourceExhausted(`not enough capacity: ${size} bytes asked, ${cap.availableBytes} available in the ${backend.name} backend`);
    }
    const rec: VolumeRecord = {
      id,
      name: want.name,
      backend: backend.name,
      capacityBytes: size,
      accessType: want.accessType,
      fsType: want.fsType,
      parameters: want.params,
      mutableParameters: want.mutable,
      contentSource: source.ref,
      topology: backend.nodeLocal ? this.ctx.topology : {},
      published: {},
      createdAt: new Date().toISOString(),
    };
    return backend.createVolume(rec, secrets);
  }

  async DeleteVolume(req: T.DeleteVolumeRequest__Output): Promise<T.DeleteVolumeResponse> {
    const backend = this.ctx.ownerOf(req.volume_id, 'volume_id', 'vol');
    if (!backend) return {};
    // Long work (copies, wipes) runs on when the caller's deadline passes; a retry sees it finish.
    const work = () => this.ctx.locks.with([req.volume_id], 'DeleteVolume', async () => {
      const vol = await backend.getVolume(req.volume_id);
      if (!vol) {
        await backend.deleteVolume(req.volume_id, req.secrets ?? {}); // finishes a half-done delete
        return {};
      }
      const nodes = Object.keys(vol.published);
      if (nodes.length > 0) throw failedPrecondition(`volume ${vol.id} is still published to node(s) ${nodes.join(', ')}: ControllerUnpublishVolume first`);
      await backend.deleteVolume(vol.id, req.secrets ?? {});
      return {};
    });
    return this.ctx.background.run(req.volume_id, 'DeleteVolume', work);
  }

  private async knownNode(nodeId: string, vol: VolumeRecord, backend: ControllerBackend): Promise<void> {
    if (!backend.nodeLocal) {
      if (!(await backend.knowsNode?.(nodeId))) throw notFound(`node ${nodeId} is not known to the ${backend.name} backend`);
      return;
    }
    // Node-local volumes are reachable only from the node in their topology.
    const nodeOf = vol.topology[this.ctx.config.topologyKey];
    if (nodeId !== this.ctx.config.nodeId || (nodeOf !== undefined && nodeOf !== nodeId)) {
      throw notFound(`node ${nodeId} is not known to this driver or cannot reach volume ${vol.id} (it lives on ${nodeOf ?? 'an unknown node'})`);
    }
  }

  async ControllerPublishVolume(req: T.ControllerPublishVolumeRequest__Output): Promise<T.ControllerPublishVolumeResponse> {
    if (!req.volume_id) throw invalidArgument('volume_id is required');
    if (!req.node_id) throw invalidArgument('node_id is required');
    const cap = checkCapability(req.volume_capability as Capability);
    checkStringMap(req.volume_context, 'volume_context');
    const { backend, vol } = await this.ctx.mustFindVolume(req.volume_id);
    await this.knownNode(req.node_id, vol, backend);
    if (cap.accessType !== vol.accessType) throw invalidArgument(`volume ${vol.id} is a ${vol.accessType} volume; it cannot be published for ${cap.accessType} access`);
    const refusal = backend.accessRefusal?.(cap.accessType, cap.mode);
    if (refusal) throw invalidArgument(refusal);
    const readonly = !!req.readonly || READ_ONLY_MODES.has(cap.mode);

    const prev = this.publishChain.get(req.node_id) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(() =>
      this.ctx.locks.with([vol.id], 'ControllerPublishVolume', async () => {
        const cur = (await backend.getVolume(vol.id)) ?? vol;
        const mine = cur.published[req.node_id];
        if (mine) {
          if (mine.readonly !== readonly || mine.accessMode !== cap.mode) {
            throw alreadyExists(`volume ${vol.id} is already published to node ${req.node_id} with readonly=${mine.readonly} and ${mine.accessMode}`);
          }
          return { publish_context: {} };
        }
        const others = Object.keys(cur.published);
        if (others.length > 0 && (SINGLE_NODE_MODES.has(cap.mode) || Object.values(cur.published).some((p) => SINGLE_NODE_MODES.has(p.accessMode)))) {
          throw failedPrecondition(`volume ${vol.id} is already published to node ${others.join(', ')} with a single-node access mode`);
        }
        const limit = this.ctx.config.maxVolumesPerNode;
        if (limit > 0) {
          const count = (await this.ctx.allVolumes()).filter((v) => v.published[req.node_id]).length;
          if (count >= limit) throw resourceExhausted(`node ${req.node_id} already has ${count} volumes published, its limit (max_volumes_per_node) is ${limit}`);
        }
        cur.published[req.node_id] = { readonly, accessMode: cap.mode };
        await backend.saveVolume(cur, req.secrets ?? {});
        return { publish_context: {} };
      }),
    );
    this.publishChain.set(req.node_id, next);
    try {
      return await next;
    } finally {
      if (this.publishChain.get(req.node_id) === next) this.publishChain.delete(req.node_id);
    }
  }

  async ControllerUnpublishVolume(req: T.ControllerUnpublishVolumeRequest__Output): Promise<T.ControllerUnpublishVolumeResponse> {
    const backend = this.ctx.ownerOf(req.volume_id, 'volume_id', 'vol');
    if (!backend) return {}; // unknown volume: safely regarded as unpublished (spec)
    return this.ctx.locks.with([req.volume_id], 'ControllerUnpublishVolume', async () => {
      const vol = await backend.getVolume(req.volume_id);
      if (!vol) return {};
      const nodes = req.node_id ? [req.node_id] : Object.keys(vol.published);
      if (!nodes.some((n) => vol.published[n])) return {};
      for (const n of nodes) delete vol.published[n];
      await backend.saveVolume(vol, req.secrets ?? {});
      return {};
    });
  }

  async ValidateVolumeCapabilities(req: T.ValidateVolumeCapabilitiesRequest__Output): Promise<T.ValidateVolumeCapabilitiesResponse> {
    if (!req.volume_id) throw invalidArgument('volume_id is required');
    const caps = checkCapabilities(req.volume_capabilities as Capability[]);
    const params = checkStringMap(req.parameters, 'parameters');
    const mutable = checkStringMap(req.mutable_parameters, 'mutable_parameters');
    const { backend, vol } = await this.ctx.mustFindVolume(req.volume_id);
    const refusal = caps.map((c) => backend.accessRefusal?.(c.accessType, c.mode)).find(Boolean);
    const mismatch =
      refusal ??
      (caps.find((c) => c.accessType !== vol.accessType)
        ? `volume ${vol.id} is a ${vol.accessType} volume`
        : caps.find((c) => c.fsType && c.fsType !== vol.fsType)
          ? `volume ${vol.id} holds ${vol.fsType}`
          : Object.keys(params).length && !sameMap(params, vol.parameters)
            ? 'parameters differ from the ones the volume was created with'
            : Object.entries(mutable).some(([k, v]) => vol.mutableParameters[k] !== v)
              ? 'mutable parameters differ from the volume’s'
              : '');
    if (mismatch) return { message: mismatch };
    return {
      confirmed: {
        volume_context: req.volume_context ?? {},
        volume_capabilities: req.volume_capabilities,
        parameters: params,
        mutable_parameters: mutable,
      },
    };
  }

  async ListVolumes(req: T.ListVolumesRequest__Output): Promise<T.ListVolumesResponse> {
    const all = await this.ctx.allVolumes();
    const { page, nextToken } = paginate(all, (v) => v.id, req.starting_token, pageSize(req.max_entries));
    return { entries: page.map((v) => ({ volume: volumeMessage(v), status: { published_node_ids: Object.keys(v.published) } })), next_token: nextToken };
  }

  async ControllerGetVolumeHealth(req: T.ControllerGetVolumeHealthRequest__Output): Promise<T.ControllerGetVolumeHealthResponse> {
    if (!req.volume_id) throw invalidArgument('volume_id is required');
    const { backend, vol } = await this.ctx.mustFindVolume(req.volume_id);
    return { volume_health: { volume_id: vol.id, health_statuses: await backend.volumeHealth(vol) } };
  }

  /**
   * Pages over all volumes like ListVolumes and answers the abnormal ones among each page:
   * a page may hold fewer entries than max_entries (even none) while next_token goes on,
   * which keeps the work of one call bounded by max_entries whatever the number of volumes.
   */
  async ControllerListVolumeHealth(req: T.ControllerListVolumeHealthRequest__Output): Promise<T.ControllerListVolumeHealthResponse> {
    const all = await this.ctx.allVolumes();
    const { page, nextToken } = paginate(all, (v) => v.id, req.starting_token, pageSize(req.max_entries));
    const entries = [];
    for (const v of page) {
      const problems = await this.ctx.backendFor(v.backend).volumeHealth(v);
      if (problems.length) entries.push({ volume_id: v.id, health_statuses: problems });
    }
    return { entries, next_token: nextToken };
  }

  async GetCapacity(req: T.GetCapacityRequest__Output): Promise<T.GetCapacityResponse> {
    const params = checkStringMap(req.parameters, 'parameters');
    if (req.volume_capabilities?.length) checkCapabilities(req.volume_capabilities as Capability[]);
    const backend = this.ctx.backendFor(params.backend ?? this.ctx.config.defaultBackend);
    backendParameters(backend, params);
    const segs = req.accessible_topology?.segments;
    if (backend.nodeLocal && segs && Object.keys(segs).length && !topologyMatches(segs, this.ctx.topology)) {
      return { available_capacity: '0', maximum_volume_size: null, minimum_volume_size: null };
    }
    const cap = await backend.capacity(params);
    return {
      available_capacity: cap.availableBytes.toString(),
      maximum_volume_size: {
        value: (cap.maximumVolumeBytes !== undefined && cap.maximumVolumeBytes < cap.availableBytes ? cap.maximumVolumeBytes : cap.availableBytes).toString(),
      },
      minimum_volume_size: { value: (cap.minimumVolumeBytes ?? MiB).toString() },
    };
  }

  async CreateSnapshot(req: T.CreateSnapshotRequest__Output): Promise<T.CreateSnapshotResponse> {
    checkName(req.name);
    if (!req.source_volume_id) throw invalidArgument('source_volume_id is required');
    const params = checkSnapshotParameters(req.parameters);
    const backend = this.ctx.ownerOf(req.source_volume_id, 'source_volume_id', 'vol');
    if (!backend) throw notFound(`source volume ${req.source_volume_id} does not exist`);
    // A snapshot lives where its source does: requirements elsewhere cannot be met.
    this.checkTopology(backend, req.accessibility_requirements, 'snapshot');
    const id = deriveId('snap', backend.name, req.name, locationOf(req.source_volume_id));
    // Long work (copies, wipes) runs on when the caller's deadline passes; a retry sees it finish.
    const work = () => this.ctx.locks.with([id, req.source_volume_id], 'CreateSnapshot', async () => {
      const existing = await lookUpByName(id, (x) => backend.getSnapshot(x));
      if (existing) {
        if (existing.sourceVolumeId !== req.source_volume_id) {
          throw alreadyExists(`a snapshot named ${JSON.stringify(req.name)} already exists (${existing.id}) of another volume, ${existing.sourceVolumeId}`);
        }
        return { snapshot: this.snapshotOut(backend, existing) };
      }
      const vol = await backend.getVolume(req.source_volume_id);
      if (!vol) throw notFound(`source volume ${req.source_volume_id} does not exist`);
      const t = nowTimestamp();
      const rec: SnapshotRecord = {
        id,
        name: req.name,
        sourceVolumeId: vol.id,
        sizeBytes: vol.capacityBytes,
        createdAtSeconds: t.seconds,
        createdAtNanos: t.nanos,
        groupSnapshotId: '',
        parameters: params,
      };
      const [made] = await backend.createSnapshots([rec], req.secrets ?? {});
      return { snapshot: this.snapshotOut(backend, made) };
    });
    return this.ctx.background.run(id, 'CreateSnapshot', work);
  }

  async DeleteSnapshot(req: T.DeleteSnapshotRequest__Output): Promise<T.DeleteSnapshotResponse> {
    const backend = this.ctx.ownerOf(req.snapshot_id, 'snapshot_id', 'snap');
    if (!backend) return {};
    return this.ctx.locks.with([req.snapshot_id], 'DeleteSnapshot', async () => {
      const snap = await backend.getSnapshot(req.snapshot_id);
      if (snap?.groupSnapshotId && (await backend.groupSnapshots?.getGroupSnapshot(snap.groupSnapshotId))) {
        throw invalidArgument(`snapshot ${snap.id} is part of group snapshot ${snap.groupSnapshotId}; delete the group with DeleteVolumeGroupSnapshot`);
      }
      await backend.deleteSnapshot(req.snapshot_id, req.secrets ?? {});
      return {};
    });
  }

  async ListSnapshots(req: T.ListSnapshotsRequest__Output): Promise<T.ListSnapshotsResponse> {
    let snaps: Array<{ backend: ControllerBackend; snap: SnapshotRecord }> = [];
    if (req.snapshot_id) {
      const found = parseId(req.snapshot_id, 'snapshot_id', 'snap') ? await this.ctx.findSnapshot(req.snapshot_id) : undefined;
      snaps = found ? [found] : [];
    } else {
      for (const backend of this.ctx.backends.values()) snaps.push(...(await backend.listSnapshots()).map((snap) => ({ backend, snap })));
    }
    if (req.source_volume_id) snaps = snaps.filter((s) => s.snap.sourceVolumeId === req.source_volume_id);
    const { page, nextToken } = paginate(snaps, (s) => s.snap.id, req.starting_token, pageSize(req.max_entries));
    return { entries: page.map((s) => ({ snapshot: this.snapshotOut(s.backend, s.snap) })), next_token: nextToken };
  }

  async GetSnapshot(req: T.GetSnapshotRequest__Output): Promise<T.GetSnapshotResponse> {
    const found = (await this.ctx.findSnapshot(req.snapshot_id)) ?? undefined;
    if (!found) throw notFound(`snapshot ${req.snapshot_id} does not exist`);
    return { snapshot: this.snapshotOut(found.backend, found.snap) };
  }

  async ControllerExpandVolume(req: T.ControllerExpandVolumeRequest__Output): Promise<T.ControllerExpandVolumeResponse> {
    if (!req.volume_id) throw invalidArgument('volume_id is required');
    if (!req.capacity_range) throw invalidArgument('capacity_range is required');
    const range = parseRange(req.capacity_range);
    if (req.volume_capability) checkCapability(req.volume_capability as Capability);
    const { backend, vol } = await this.ctx.mustFindVolume(req.volume_id);
    const unit = await backend.granularity(vol.parameters);
    const want = roundUp(range.required > 0n ? range.required : range.limit, unit > MiB ? unit : MiB);
    if (range.limit > 0n && want > range.limit) throw outOfRange(`cannot expand within limit_bytes ${range.limit}: sizes are whole multiples of ${unit} bytes`);
    return this.ctx.locks.with([vol.id], 'ControllerExpandVolume', async () => {
      const cur = (await backend.getVolume(vol.id)) ?? vol;
      if (want <= cur.capacityBytes) {
        // A retry after a crash must still send the node to grow the device and filesystem.
        return { capacity_bytes: cur.capacityBytes.toString(), node_expansion_required: true };
      }
      const cap = await backend.capacity(cur.parameters);
      if (want - cur.capacityBytes > cap.availableBytes) {
        throw resourceExhausted(`not enough capacity to grow ${vol.id} by ${want - cur.capacityBytes} bytes: ${cap.availableBytes} available`);
      }
      const next = await backend.expandVolume(cur, want, req.secrets ?? {});
      // The node must refresh the device's size; for filesystems it also grows the filesystem.
      return { capacity_bytes: next.capacityBytes.toString(), node_expansion_required: true };
    });
  }

  async ControllerGetVolume(req: T.ControllerGetVolumeRequest__Output): Promise<T.ControllerGetVolumeResponse> {
    if (!req.volume_id) throw invalidArgument('volume_id is required');
    const { vol } = await this.ctx.mustFindVolume(req.volume_id);
    return { volume: volumeMessage(vol), status: { published_node_ids: Object.keys(vol.published) } };
  }

  async ControllerModifyVolume(req: T.ControllerModifyVolumeRequest__Output): Promise<T.ControllerModifyVolumeResponse> {
    if (!req.volume_id) throw invalidArgument('volume_id is required');
    const mutable = checkStringMap(req.mutable_parameters, 'mutable_parameters');
    const { backend, vol } = await this.ctx.mustFindVolume(req.volume_id);
    checkMutable(backend, mutable);
    return this.ctx.locks.with([vol.id], 'ControllerModifyVolume', async () => {
      const cur = (await backend.getVolume(vol.id)) ?? vol;
      cur.mutableParameters = { ...cur.mutableParameters, ...mutable };
      // the secrets reach backends whose storage applies the parameters (RBD's QoS limits)
      await backend.saveVolume(cur, req.secrets ?? {});
      return {};
    });
  }
}
