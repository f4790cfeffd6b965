// Original file: proto/csi.proto

import type { VolumeHealthErrorType as _csi_v1_VolumeHealthErrorType, VolumeHealthErrorType__Output as _csi_v1_VolumeHealthErrorType__Output } from '../../csi/v1/VolumeHealthErrorType';

export interface _csi_v1_VolumeHealth_VolumeHealthEntry {
  /**
   * One or more health status values associated with the volume.
   * Adverse health conditions should only be removed from reporting
   * when the corresponding health problem is no longer happening.
   * This field is REQUIRED.
   */
  'status'?: (_csi_v1_VolumeHealthErrorType);
  /**
   * A brief CamelCase string that describes the condition and is
   * suitable for machine parsing and concise CLI display.
   * The Plugin MUST NOT return multiple VolumeHealthEntry messages
   * for the same volume with the same (status, reason) combination.
   * This field is REQUIRED.
   */
  'reason'?: (string);
  /**
   * A user friendly description of the volume health condition.
   * This field is OPTIONAL.
   */
  'message'?: (string);
}

export interface _csi_v1_VolumeHealth_VolumeHealthEntry__Output {
  /**
   * One or more health status values associated with the volume.
   * Adverse health conditions should only be removed from reporting
   * when the corresponding health problem is no longer happening.
   * This field is REQUIRED.
   */
  'status': (_csi_v1_VolumeHealthErrorType__Output);
  /**
   * A brief CamelCase string that describes the condition and is
   * suitable for machine parsing and concise CLI display.
   * The Plugin MUST NOT return multiple VolumeHealthEntry messages
   * for the same volume with the same (status, reason) combination.
   * This field is REQUIRED.
   */
  'reason': (string);
  /**
   * A user friendly description of the volume health condition.
   * This field is OPTIONAL.
   */
  'message': (string);
}

export interface VolumeHealth {
  /**
   * The ID of the volume.
   * This field is REQUIRED.
   */
  'volume_id'?: (string);
  /**
   * Health statuses associated with the volume. An empty list means no
   * adverse health condition is known by the Plugin.
   * 
   * The SP MAY report one or more health issues with the volume at the
   * same time. A future version of the CSI spec MAY introduce
   * additional VolumeHealthErrorType values. A Plugin that adopts a
   * newer spec version MAY report newer error types alongside existing
   * ones, but MUST NOT remove an older error entry from
   * health_statuses until that condition is no longer present.
   * 
   * COs MUST ignore unknown VolumeHealthErrorType values, that they
   * don't know about.
   * 
   * For example:
   * - CSI spec v1.12.3
   * A Plugin reports an adverse health condition as DEGRADED.
   * - CSI spec v1.12.5
   * A new VolumeHealthErrorType value MULTIPATH_LOSS is introduced.
   * The Plugin upgrades and now reports [DEGRADED, MULTIPATH_LOSS]
   * for this volume. An older CO that does not recognize
   * MULTIPATH_LOSS still acts on DEGRADED as before and surfaces
   * the unknown value for observability without taking automated
   * action on it.
   * 
   * This field is OPTIONAL.
   */
  'health_statuses'?: (_csi_v1_VolumeHealth_VolumeHealthEntry)[];
}

export interface VolumeHealth__Output {
  /**
   * The ID of the volume.
   * This field is REQUIRED.
   */
  'volume_id': (string);
  /**
   * Health statuses associated with the volume. An empty list means no
   * adverse health condition is known by the Plugin.
   * 
   * The SP MAY report one or more health issues with the volume at the
   * same time. A future version of the CSI spec MAY introduce
   * additional VolumeHealthErrorType values. A Plugin that adopts a
   * newer spec version MAY report newer error types alongside existing
   * ones, but MUST NOT remove an older error entry from
   * health_statuses until that condition is no longer present.
   * 
   * COs MUST ignore unknown VolumeHealthErrorType values, that they
   * don't know about.
   * 
   * For example:
   * - CSI spec v1.12.3
   * A Plugin reports an adverse health condition as DEGRADED.
   * - CSI spec v1.12.5
   * A new VolumeHealthErrorType value MULTIPATH_LOSS is introduced.
   * The Plugin upgrades and now reports [DEGRADED, MULTIPATH_LOSS]
   * for this volume. An older CO that does not recognize
   * MULTIPATH_LOSS still acts on DEGRADED as before and surfaces
   * the unknown value for observability without taking automated
   * action on it.
   * 
   * This field is OPTIONAL.
   */
  'health_statuses': (_csi_v1_VolumeHealth_VolumeHealthEntry__Output)[];
}
