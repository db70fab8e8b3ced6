-- Deliveries of `api_key.created` stored before webhook payloads left out what the event log
-- never shows carried the new key's `key_hash` (its HMAC under the pepper). Take it out of
-- the stored payloads, so resends and `GET /webhooks/{id}/deliveries/{delivery_id}` no longer
-- show it (receivers that already got it keep what they got).
UPDATE webhook_deliveries
   SET payload = payload #- '{data,key_hash}'
 WHERE payload -> 'data' ? 'key_hash';
