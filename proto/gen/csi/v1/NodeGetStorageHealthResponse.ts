// Original file: proto/csi.proto

import type { StorageHealthErrorType as _csi_v1_StorageHealthErrorType, StorageHealthErrorType__Output as _csi_v1_StorageHealthErrorType__Output } from '../../csi/v1/StorageHealthErrorType';
import type { VolumeCapability as _csi_v1_VolumeCapability, VolumeCapability__Output as _csi_v1_VolumeCapability__Output } from '../../csi/v1/VolumeCapability';

export interface _csi_v1_NodeGetStorageHealthResponse_StorageBackendHealth {
  /**
   * Health status for this storage backend.
   * This field is REQUIRED.
   */
  'status'?: (_csi_v1_StorageHealthErrorType);
  /**
   * A brief CamelCase string that describes the condition and is
   * suitable for machine parsing and concise CLI display.
   * The Plugin MUST NOT return multiple StorageBackendHealth messages
   * with the same (status, reason, volume_capability) combination.
   * This field is REQUIRED.
   */
  'reason'?: (string);
  /**
   * A user friendly description of the storage health condition.
   * This field is OPTIONAL.
   */
  'message'?: (string);
  /**
   * Volume capability affected by this storage health condition.
   * This field is OPTIONAL.
   */
  'volume_capability'?: (_csi_v1_VolumeCapability | null);
}

export interface _csi_v1_NodeGetStorageHealthResponse_StorageBackendHealth__Output {
  /**
   * Health status for this storage backend.
   * This field is REQUIRED.
   */
  'status': (_csi_v1_StorageHealthErrorType__Output);
  /**
   * A brief CamelCase string that describes the condition and is
   * suitable for machine parsing and concise CLI display.
   * The Plugin MUST NOT return multiple StorageBackendHealth messages
   * with the same (status, reason, volume_capability) combination.
   * This field is REQUIRED.
   */
  'reason': (string);
  /**
   * A user friendly description of the storage health condition.
   * This field is OPTIONAL.
   */
  'message': (string);
  /**
   * Volume capability affected by this storage health condition.
   * This field is OPTIONAL.
   */
  'volume_capability': (_csi_v1_VolumeCapability__Output | null);
}

export interface NodeGetStorageHealthResponse {
  /**
   * Health information for storage backends or classes available from
   * this node.
   * This field is OPTIONAL.
   */
  'backend_health'?: (_csi_v1_NodeGetStorageHealthResponse_StorageBackendHealth)[];
}

export interface NodeGetStorageHealthResponse__Output {
  /**
   * Health information for storage backends or classes available from
   * this node.
   * This field is OPTIONAL.
   */
  'backend_health': (_csi_v1_NodeGetStorageHealthResponse_StorageBackendHealth__Output)[];
}
