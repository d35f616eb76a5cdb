-- receipts from Aliyun and Tencent name the call or message by the provider's id
CREATE INDEX IF NOT EXISTS notifications_provider_sid ON notifications (provider_sid) WHERE provider_sid IS NOT NULL;
