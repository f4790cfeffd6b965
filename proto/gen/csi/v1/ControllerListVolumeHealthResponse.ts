// Original file: proto/csi.proto

import type { VolumeHealth as _csi_v1_VolumeHealth, VolumeHealth__Output as _csi_v1_VolumeHealth__Output } from '../../csi/v1/VolumeHealth';

export interface ControllerListVolumeHealthResponse {
  /**
   * List of abnormal volume health entries.
   */
  'entries'?: (_csi_v1_VolumeHealth)[];
  /**
   * This token allows you to get the next page of entries for
   * `ControllerListVolumeHealth` request. If the number of entries is
   * larger than `max_entries`, use the `next_token` as a value for the
   * `starting_token` field in the next request. This field is
   * OPTIONAL.
   * An empty string is equal to an unspecified field value.
   */
  'next_token'?: (string);
}

export interface ControllerListVolumeHealthResponse__Output {
  /**
   * List of abnormal volume health entries.
   */
  'entries': (_csi_v1_VolumeHealth__Output)[];
  /**
   * This token allows you to get the next page of entries for
   * `ControllerListVolumeHealth` request. If the number of entries is
   * larger than `max_entries`, use the `next_token` as a value for the
   * `starting_token` field in the next request. This field is
   * OPTIONAL.
   * An empty string is equal to an unspecified field value.
   */
  'next_token': (string);
}
