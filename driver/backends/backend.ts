// The one interface every storage backend implements. The CSI services validate, lock
// and map errors; a backend only stores and exposes bytes and the records describing them.
// Backends never import the CSI services.

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

export interface VolumeHealth {
  abnormal: boolean;
  message: string;
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

export interface Backend {
  /** The value of the `backend` StorageClass parameter that selects it; also the middle part of its IDs. */
  readonly name: string;
  /**
   * Node-local backends (loop, LVM) serve only the node they run on: their volumes carry
   * this node's topology segment and publish only to it. Shared backends (RBD) reach any
   * node the backend knows (knowsNode).
   */
  readonly nodeLocal: boolean;
  /** Shared backends: whether a node ID names a node that can reach this backend's volumes. */
  knowsNode?(nodeId: string): Promise<boolean>;
  /** Mutable parameters (ControllerModifyVolume) and their allowed values. */
  readonly mutableParameters: Record<string, readonly string[]>;
  /**
   * Why this backend cannot serve an access mode for an access type (undefined: it can).
   * Shared backends refuse what would corrupt data, e.g. one filesystem mounted read-write
   * on several nodes.
   */
  accessRefusal?(accessType: AccessType, mode: string): string | undefined;
  /** Checks backend-specific CreateVolume parameters; throws BackendError('invalid'). */
  validateParameters(params: Record<string, string>): void;

  /** Start-up reconciliation of half-done work. */
  init(): Promise<void>;

  capacity(params: Record<string, string>): Promise<Capacity>;
  /** Sizes are whole multiples of this (LVM extents); the controller rounds up to it. */
  granularity(params: Record<string, string>): Promise<bigint>;

  getVolume(id: string, secrets?: Secrets): Promise<VolumeRecord | undefined>;
  listVolumes(): Promise<VolumeRecord[]>;
  /** Creates the storage for a record the controller has fully decided (content source included). */
  createVolume(rec: VolumeRecord, secrets?: Secrets): Promise<VolumeRecord>;
  /** Persists a metadata change of an existing volume (publications, mutable parameters). */
  saveVolume(rec: VolumeRecord, secrets?: Secrets): Promise<void>;
  expandVolume(rec: VolumeRecord, newBytes: bigint, secrets?: Secrets): Promise<VolumeRecord>;
  deleteVolume(id: string, secrets?: Secrets): Promise<void>;
  volumeHealth(rec: VolumeRecord): Promise<VolumeHealth>;

  getSnapshot(id: string): Promise<SnapshotRecord | undefined>;
  listSnapshots(): Promise<SnapshotRecord[]>;
  /** Takes all snapshots at one point in time (a group snapshot is several). */
  createSnapshots(recs: SnapshotRecord[], secrets?: Secrets): Promise<SnapshotRecord[]>;
  deleteSnapshot(id: string, secrets?: Secrets): Promise<void>;

  getGroupSnapshot(id: string): Promise<GroupSnapshotRecord | undefined>;
  saveGroupSnapshot(rec: GroupSnapshotRecord): Promise<void>;
  deleteGroupSnapshotRecord(id: string): Promise<void>;

  // Node side: expose a volume as a block device on this node.
  attach(rec: VolumeRecord, secrets?: Secrets): Promise<string>;
  attachedDevice(rec: VolumeRecord): Promise<string | undefined>;
  detach(rec: VolumeRecord): Promise<void>;
  /** Makes an attached device see the volume's current size. */
  refreshDevice(rec: VolumeRecord, device: string): Promise<void>;
}
