// Original file: proto/csi.proto

export const StorageHealthErrorType = {
  UNKNOWN_STORAGE_HEALTH_ERROR_TYPE: 'UNKNOWN_STORAGE_HEALTH_ERROR_TYPE',
  /**
   * The storage backend is operating in a degraded
   * state (e.g. reduced path count, high latency).
   * Volumes using this backend may experience reduced performance.
   */
  STORAGE_DEGRADED: 'STORAGE_DEGRADED',
  /**
   * The storage backend is completely unreachable from this node.
   * Volumes using this backend are expected to be unavailable.
   */
  STORAGE_UNREACHABLE: 'STORAGE_UNREACHABLE',
} as const;

export type StorageHealthErrorType =
  | 'UNKNOWN_STORAGE_HEALTH_ERROR_TYPE'
  | 0
  /**
   * The storage backend is operating in a degraded
   * state (e.g. reduced path count, high latency).
   * Volumes using this backend may experience reduced performance.
   */
  | 'STORAGE_DEGRADED'
  | 1
  /**
   * The storage backend is completely unreachable from this node.
   * Volumes using this backend are expected to be unavailable.
   */
  | 'STORAGE_UNREACHABLE'
  | 2

export type StorageHealthErrorType__Output = typeof StorageHealthErrorType[keyof typeof StorageHealthErrorType]
