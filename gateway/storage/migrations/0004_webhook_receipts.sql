-- webhook receipts (Twilio retries: apply each once)
CREATE TABLE IF NOT EXISTS webhook_receipts (
  receipt text PRIMARY KEY,
  received_at timestamptz NOT NULL DEFAULT now()
);
