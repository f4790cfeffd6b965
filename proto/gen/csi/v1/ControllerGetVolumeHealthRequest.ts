// Original file: proto/csi.proto


export interface ControllerGetVolumeHealthRequest {
  /**
   * The ID of the volume to fetch health information for.
   * This field is REQUIRED.
   */
  'volume_id'?: (string);
  /**
   * Secrets required by plugin to complete the request.
   * This field is OPTIONAL. Refer to the `Secrets Requirements`
   * section on how to use this field.
   */
  'secrets'?: ({[key: string]: string});
}

export interface ControllerGetVolumeHealthRequest__Output {
  /**
   * The ID of the volume to fetch health information for.
   * This field is REQUIRED.
   */
  'volume_id': (string);
  /**
   * Secrets required by plugin to complete the request.
   * This field is OPTIONAL. Refer to the `Secrets Requirements`
   * section on how to use this field.
   */
  'secrets': ({[key: string]: string});
}
