// What a storage backend offers the CSI services, split by who needs it: the controller
// (ControllerBackend), the node (NodeBackend) and, optionally, group snapshot records
// (GroupSnapshotStore). The CSI services validate, lock and map errors; a backend only
// stores and exposes bytes and the records describing them. Backends never import the
// CSI services. test/integration/backend-contract.test.ts checks the contract on each.

export type AccessType = 'mount' | 'block';

export interface Publication {
  readonly: boolean;
  accessMode: string;
}

export interface VolumeRecord {
  id: string;
  name: string;
  backend: string;
  capacityBytes: bigint;
  /** The access type the volume was created for; stage/publish must match it. */
  accessType: AccessType;
  /** Filesystem for mount volumes ('' for block). */
  fsType: string;
  parameters: Record<string, string>;
  mutableParameters: Record<string, string>;
  contentSource?: { type: 'snapshot' | 'volume'; id: string };
  /** The topology segments the volume is reachable from. */
  topology: Record<string, string>;
  /** ControllerPublish state: node ID -> how it was published. */
  published: Record<string, Publication>;
  createdAt: string;
}

export interface SnapshotRecord {
  id: string;
  name: string;
  sourceVolumeId: string;
  sizeBytes: bigint;
  /** RFC 3339 with nanoseconds kept as a separate integer. */
  createdAtSeconds: bigint;
  createdAtNanos: number;
  groupSnapshotId: string;
  parameters: Record<string, string>;
}

export interface GroupSnapshotRecord {
  id: string;
  name: string;
  snapshotIds: string[];
  createdAtSeconds: bigint;
  createdAtNanos: number;
  parameters: Record<string, string>;
}

export interface Capacity {
  availableBytes: bigint;
  /** The largest single volume the backend makes, whatever is free. */
  maximumVolumeBytes?: bigint;
  minimumVolumeBytes?: bigint;
}

/**
 * One adverse condition of a volume (CSI VolumeHealth.VolumeHealthEntry): DEGRADED (usable,
 * not optimal), INACCESSIBLE (cannot be read or written), DATA_LOSS (bytes are known or
 * strongly suspected lost). `reason` is CamelCase and machine-readable; `message` tells a
 * person what is wrong and what to do. A volume with no known problem has none.
 */
export interface HealthProblem {
  status: 'DEGRADED' | 'INACCESSIBLE' | 'DATA_LOSS';
  reason: string;
  message: string;
}

/** One adverse condition of the storage a node uses (CSI NodeGetStorageHealth). */
export interface StorageProblem {
  status: 'STORAGE_DEGRADED' | 'STORAGE_UNREACHABLE';
  reason: string;
  message: string;
}

/**
 * Changed-block tracking (the SnapshotMetadata service): which byte ranges of a snapshot
 * hold data, and which differ between two snapshots of one volume (base taken first). The
 * ranges are sorted, do not overlap, and lie within capacityBytes (the snapshot's size;
 * for a delta, the target's). A delta that cannot be known exactly is refused
 * ('precondition': the caller takes a full backup), never guessed.
 */
export interface SnapshotBlocks {
  allocated(snap: SnapshotRecord, secrets?: Secrets): Promise<BlockMap>;
  delta(base: SnapshotRecord, target: SnapshotRecord, secrets?: Secrets): Promise<BlockMap>;
}

export interface BlockMap {
  capacityBytes: bigint;
  ranges: Array<{ offset: bigint; length: bigint }>;
  /**
   * Set when the ranges are only known to this granularity (a delta computed by comparing
   * blocks of this size): the answer is then these blocks one by one (FIXED_LENGTH), and
   * every range starts and ends on a multiple of it.
   */
  fixedBlockBytes?: bigint;
}

/**
 * One pool a backend allocates from, for the metrics: the loop data pool's filesystem, a
 * volume group, a thin pool's data or metadata, a Ceph pool. `pool` names it the way an
 * admin would (a path, "vg", "vg/thinpool", "cluster/pool").
 */
export interface PoolUsage {
  pool: string;
  part: 'data' | 'metadata';
  capacityBytes: bigint;
  /** Undefined when the backend cannot tell now (an inactive thin pool): not exported, rather than a guess. */
  freeBytes: bigint | undefined;
}

/** A backend rejects a request it cannot serve with one of these; the services map them to gRPC codes. */
export class BackendError extends Error {
  constructor(
    readonly reason: 'not-found' | 'exhausted' | 'precondition' | 'invalid' | 'unsupported',
    message: string,
  ) {
    super(message);
    this.name = 'BackendError';
  }
}

/**
 * The CSI secrets of a request (its `secrets` field: provisioner, node-stage, ... secrets).
 * Only backends that need credentials look at them (RBD: userID/userKey). Never logged.
 */
export type Secrets = Record<string, string>;

// The contract, for every member below unless it says otherwise:
// - IDs are the driver's (ids.ts); a backend never invents one. Looking up an ID that does
//   not exist answers undefined, never throws; deleting one that does not exist succeeds.
//   An ID may carry the location the backend gave (locationOf; a snapshot's is its source
//   volume's): the backend looks there only. IDs that differ only in location name the same
//   object, and an ID without one (older IDs, the sidecars' own) is found wherever it is.
//   So every delete is idempotent, and a retry after a crash at any point finishes the work.
// - A refusal the CO must see with its gRPC code is a BackendError: 'invalid' (the request
//   can never succeed here: INVALID_ARGUMENT), 'not-found' (something it names is gone:
//   NOT_FOUND), 'precondition' (not now, e.g. still mapped or has clones:
//   FAILED_PRECONDITION), 'exhausted' (no space: RESOURCE_EXHAUSTED), 'unsupported'
//   (an operation this backend does not have: UNIMPLEMENTED).
//   Anything else thrown is a failure of the host or its tools (INTERNAL).
// - Methods are called under the driver's per-ID locks; a backend need not lock an ID itself.

/** What both sides know of a backend. */
export interface BackendBase {
  /** The value of the `backend` StorageClass parameter that selects it; also the middle part of its IDs. */
  readonly name: string;
  /**
   * Node-local backends (loop, LVM) serve only the node they run on: their volumes carry
   * this node's topology segment and publish only to it. Shared backends (RBD) reach any
   * node the backend knows (knowsNode).
   */
  readonly nodeLocal: boolean;
  /** Start-up reconciliation of half-done work; the driver serves no call before it resolves. */
  init(): Promise<void>;
  /** A volume's record (both sides read it: the node to attach what the controller made). */
  getVolume(id: string, secrets?: Secrets): Promise<VolumeRecord | undefined>;
  /**
   * What is wrong with the volume's storage, as this side sees it (the node adds what it sees
   * of its own attachment); empty when nothing is known to be wrong. Never throws for a
   * volume that exists: a check that cannot run is itself a problem to report.
   */
  volumeHealth(rec: VolumeRecord): Promise<HealthProblem[]>;
  /**
   * Backends whose records live in the storage itself (an LV's tags, an image's metadata)
   * lose a volume's record with its storage: this is the problem to report for a volume a
   * node still has staged when getVolume no longer finds it.
   */
  volumeGone?(id: string): Promise<HealthProblem>;
  /** The pools it allocates from and how full they are (read at metrics scrape time). */
  poolUsage?(): Promise<PoolUsage[]>;
}

/** What a mutable parameter may be: one of these values, or what a check lets through (it names what is wrong, or answers undefined). */
export type MutableValues = readonly string[] | ((value: string) => string | undefined);

/** What the controller service needs: provisioning, snapshots, publication records. */
export interface ControllerBackend extends BackendBase {
  /** Shared backends: whether a node ID names a node that can reach this backend's volumes. */
  knowsNode?(nodeId: string): Promise<boolean>;
  /** Mutable parameters (ControllerModifyVolume) and what each may be. */
  readonly mutableParameters: Record<string, MutableValues>;
  /**
   * Why this backend cannot serve an access mode for an access type (undefined: it can).
   * Shared backends refuse what would corrupt data, e.g. one filesystem mounted read-write
   * on several nodes.
   */
  accessRefusal?(accessType: AccessType, mode: string): string | undefined;
  /** Checks backend-specific CreateVolume parameters; throws BackendError('invalid'). */
  validateParameters(params: Record<string, string>): void;
  /**
   * Where a volume of these (valid) parameters lives, as the fields the driver writes into
   * its ID (ids.ts) so later calls need no search. Backends with one place have none.
   */
  locationOf?(params: Record<string, string>): string[];

  capacity(params: Record<string, string>): Promise<Capacity>;
  /** Sizes are whole multiples of this (LVM extents); the controller rounds up to it. */
  granularity(params: Record<string, string>): Promise<bigint>;

  listVolumes(): Promise<VolumeRecord[]>;
  /**
   * For the metrics, where listing costs a call per object (RBD reads each image's record):
   * how many volumes and snapshots there are, from names alone, so it may count one that a
   * crash left half-made. Without it the metrics count the listings.
   */
  countObjects?(): Promise<{ volumes: number; snapshots: number }>;
  /**
   * Creates the storage for a record the controller has fully decided (content source
   * included) and returns the record as stored. The controller calls it only when getVolume
   * found nothing; storage a crashed attempt left half-made under this ID is made again.
   * A content source that is gone is BackendError('not-found').
   */
  createVolume(rec: VolumeRecord, secrets?: Secrets): Promise<VolumeRecord>;
  /** Persists a metadata change of an existing volume (publications, mutable parameters); a volume that is gone is 'not-found'. */
  saveVolume(rec: VolumeRecord, secrets?: Secrets): Promise<void>;
  /** Grows the storage to at least newBytes (never shrinks) and returns the stored record. */
  expandVolume(rec: VolumeRecord, newBytes: bigint, secrets?: Secrets): Promise<VolumeRecord>;
  /** Removes the volume's storage and record; a volume still attached somewhere is 'precondition'. */
  deleteVolume(id: string, secrets?: Secrets): Promise<void>;

  getSnapshot(id: string): Promise<SnapshotRecord | undefined>;
  listSnapshots(): Promise<SnapshotRecord[]>;
  /**
   * Takes all snapshots at one point in time (a group snapshot is several) and returns
   * them as stored; each keeps the bytes its source had at that moment, whatever is written
   * later. A source that is gone is BackendError('not-found').
   */
  createSnapshots(recs: SnapshotRecord[], secrets?: Secrets): Promise<SnapshotRecord[]>;
  deleteSnapshot(id: string, secrets?: Secrets): Promise<void>;
  /** Backends that can tell a snapshot's allocated and changed blocks (SnapshotMetadata). */
  readonly snapshotBlocks?: SnapshotBlocks;
}

/** What the node service needs: the volume as a block device on this node. */
export interface NodeBackend extends BackendBase {
  /** Attaches the volume and answers its device; attaching an attached volume answers the same device. */
  attach(rec: VolumeRecord, secrets?: Secrets): Promise<string>;
  /** The device the volume is attached as on this node, or undefined. */
  attachedDevice(rec: VolumeRecord): Promise<string | undefined>;
  /** Detaches the volume from this node; a detached volume is left as it is. */
  detach(rec: VolumeRecord): Promise<void>;
  /**
   * What this node still holds for a volume whose record is gone (its storage removed behind
   * a staged volume, by hand or by a crash): its device, found from what is left (the ID,
   * and `recorded`, the device NodeStage wrote down, which is used only once checked to be
   * still this volume's), and how to let it go. The node unmounts what is mounted from the
   * device before calling `detach`. Undefined when nothing of it is attached here.
   */
  orphanedAttachment?(id: string, recorded: string | undefined): Promise<{ device: string; detach(): Promise<void> } | undefined>;
  /** Makes an attached device see the volume's current size (after expandVolume). */
  refreshDevice(rec: VolumeRecord, device: string): Promise<void>;
  /**
   * What is wrong with the volume's attachment as only this backend can see it (a loop
   * device still reading a backing file that was deleted or replaced); empty when nothing
   * is. Asked only while the volume is staged here. Never throws.
   */
  deviceHealth?(rec: VolumeRecord, device: string): Promise<HealthProblem[]>;
  /** What is wrong with the storage this node reaches through this backend; empty when nothing is. Never throws. */
  storageHealth?(): Promise<StorageProblem[]>;
}

/**
 * The records of group snapshots (the optional part: a backend without it has no
 * GroupController). A group's members are ordinary snapshots made by createSnapshots; this
 * keeps which snapshots form the group, wherever the backend keeps it (a file, the members'
 * own tags or metadata).
 */
export interface GroupSnapshotStore {
  getGroupSnapshot(id: string): Promise<GroupSnapshotRecord | undefined>;
  /**
   * Records the group; saving the same record again changes nothing. Every member must exist:
   * a missing one is BackendError('not-found') and nothing is recorded.
   */
  saveGroupSnapshot(rec: GroupSnapshotRecord): Promise<void>;
  /** Forgets the group; its member snapshots stay (the caller deletes them first). */
  deleteGroupSnapshotRecord(id: string): Promise<void>;
}

/** A whole backend, as the driver builds it: both sides, and group snapshots where it has them. */
export interface Backend extends ControllerBackend, NodeBackend {
  readonly groupSnapshots?: GroupSnapshotStore;
}
