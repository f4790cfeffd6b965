// Original file: proto/csi.proto

import type { VolumeHealth as _csi_v1_VolumeHealth, VolumeHealth__Output as _csi_v1_VolumeHealth__Output } from '../../csi/v1/VolumeHealth';

export interface NodeGetVolumeHealthResponse {
  /**
   * The health information for the requested volume.
   * This field is REQUIRED.
   */
  'volume_health'?: (_csi_v1_VolumeHealth | null);
}

export interface NodeGetVolumeHealthResponse__Output {
  /**
   * The health information for the requested volume.
   * This field is REQUIRED.
   */
  'volume_health': (_csi_v1_VolumeHealth__Output | null);
}
