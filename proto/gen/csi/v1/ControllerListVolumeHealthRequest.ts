// Original file: proto/csi.proto


export interface ControllerListVolumeHealthRequest {
  /**
   * If specified (non-zero value), the Plugin MUST NOT return more
   * entries than this number in the response. If the actual number of
   * entries is more than this number, the Plugin MUST set `next_token`
   * in the response which can be used to get the next page of entries
   * in the subsequent `ControllerListVolumeHealth` call. This field is
   * OPTIONAL. If not specified (zero value), it means there is no
   * restriction on the number of entries that can be returned.
   * The value of this field MUST NOT be negative.
   */
  'max_entries'?: (number);
  /**
   * A token to specify where to start paginating. Set this field to
   * `next_token` returned by a previous `ControllerListVolumeHealth`
   * call to get the next page of entries. This field is OPTIONAL.
   * An empty string is equal to an unspecified field value.
   */
  'starting_token'?: (string);
  /**
   * Secrets required by plugin to complete the request.
   * This field is OPTIONAL. Refer to the `Secrets Requirements`
   * section on how to use this field.
   */
  'secrets'?: ({[key: string]: string});
}

export interface ControllerListVolumeHealthRequest__Output {
  /**
   * If specified (non-zero value), the Plugin MUST NOT return more
   * entries than this number in the response. If the actual number of
   * entries is more than this number, the Plugin MUST set `next_token`
   * in the response which can be used to get the next page of entries
   * in the subsequent `ControllerListVolumeHealth` call. This field is
   * OPTIONAL. If not specified (zero value), it means there is no
   * restriction on the number of entries that can be returned.
   * The value of this field MUST NOT be negative.
   */
  'max_entries': (number);
  /**
   * A token to specify where to start paginating. Set this field to
   * `next_token` returned by a previous `ControllerListVolumeHealth`
   * call to get the next page of entries. This field is OPTIONAL.
   * An empty string is equal to an unspecified field value.
   */
  'starting_token': (string);
  /**
   * Secrets required by plugin to complete the request.
   * This field is OPTIONAL. Refer to the `Secrets Requirements`
   * section on how to use this field.
   */
  'secrets': ({[key: string]: string});
}
