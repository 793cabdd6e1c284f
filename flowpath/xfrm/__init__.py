"""Linux: net/xfrm/ and net/ipv{4,6}/esp{4,6}.c: the SAD and SPD, ESP tunnel mode, bulk ESP kernels.

config.xfrm_config_line (ip-batch lines) · state (XfrmState, Xfrm, xfrm_state_lookup/find with per-CPU
SAs and ACQUIRE, lifetimes) · policy (xfrm_lookup, xfrm_policy_check) · esp (per-packet
esp_output/esp_input, the reference) · esp_batch (esp_encrypt_batch/esp_decrypt_batch over PacketBatch
columns) · replay · evp · listing (ip xfrm state/policy/monitor) · km (ACQUIRE listeners).
"""
