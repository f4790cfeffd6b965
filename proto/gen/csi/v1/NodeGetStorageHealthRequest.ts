// Original file: proto/csi.proto


export interface NodeGetStorageHealthRequest {
  /**
   * Secrets required by the plugin to complete the request.
   * This field is OPTIONAL. Refer to the `Secrets Requirements`
   * section on how to use this field.
   */
  'secrets'?: ({[key: string]: string});
}

export interface NodeGetStorageHealthRequest__Output {
  /**
   * Secrets required by the plugin to complete the request.
   * This field is OPTIONAL. Refer to the `Secrets Requirements`
   * section on how to use this field.
   */
  'secrets': ({[key: string]: string});
}
