-- An endpoint's custom header values (often its receiver's own credentials) were sent in
-- `webhook_endpoint.created` and `webhook_endpoint.updated` payloads to every endpoint of the
-- project subscribed to them. Payloads now carry the names only, each value reading
-- "[redacted]"; do the same to the stored deliveries, so resends and
-- `GET /webhooks/{id}/deliveries/{delivery_id}` no longer show them (receivers that already got
-- them keep what they got).
UPDATE webhook_deliveries
   SET payload = jsonb_set(
         payload, '{data,headers}',
         (SELECT jsonb_object_agg(name, to_jsonb('[redacted]'::text))
            FROM jsonb_object_keys(payload -> 'data' -> 'headers') AS name))
 WHERE event_type IN ('webhook_endpoint.created', 'webhook_endpoint.updated')
   AND jsonb_typeof(payload -> 'data' -> 'headers') = 'object'
   AND payload -> 'data' -> 'headers' <> '{}'::jsonb;
