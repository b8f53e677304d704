//! The connections table: credentials, sealed by envelope encryption
//! under the connection's own id, kind and version context.

use super::*;

/// How a connection is stored. With a key configured (`CONNECTIONS_KEY_ID`,
/// always in `template.yaml`) the secrets, retiring ones included, are
/// sealed by envelope encryption ([`crate::keys`]) under a KMS key only
/// deliver and the operator API may use; the record keeps only counts and
/// grace ends in the clear. Plain `secrets` are read from records of
/// stacks without a key.
#[derive(Serialize, Deserialize)]
struct ConnectionRecord {
    id: String,
    kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    retiring: Vec<RetiringSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<crate::keys::Sealed>,
    /// Current secrets (readable without the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_count: Option<usize>,
    /// When each retiring secret stops signing (readable without the key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    retiring_until: Vec<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_at: Option<Timestamp>,
    /// Bumped by every write; bound into the seal with the id and kind, so
    /// a sealed blob from another record, kind or earlier write does not
    /// open. Absent on records sealed before the binding (id only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seal_version: Option<u64>,
}

impl ConnectionRecord {
    /// The write version of the record that replaces this one.
    fn next_version(&self) -> u64 {
        self.seal_version.unwrap_or(0) + 1
    }
}

/// A secret kept valid for a while after a rotation.
#[derive(Serialize, Deserialize, Clone)]
struct RetiringSecret {
    secret: String,
    until: Timestamp,
}

/// The secret part of a connection record, sealed as one JSON document.
#[derive(Serialize, Deserialize, Default)]
struct SecretMaterial {
    secrets: Vec<String>,
    #[serde(default)]
    retiring: Vec<RetiringSecret>,
}

/// The seal's context (KMS encryption context and AEAD associated data):
/// the connection's id, kind and write version. A record sealed before the
/// version existed is bound to its id alone, and is re-sealed with all
/// three by its next write.
fn seal_context(id: &str, kind: &str, version: Option<u64>) -> crate::keys::Context {
    let mut c = crate::keys::Context::from([("connection_id".to_owned(), id.to_owned())]);
    if let Some(v) = version {
        c.insert("connection_kind".to_owned(), kind.to_owned());
        c.insert("connection_version".to_owned(), v.to_string());
    }
    c
}

impl DynamoStore {
    /// A record holding `material`, sealed when a key is configured.
    async fn connection_record_of(
        &self,
        id: &str,
        kind: &str,
        material: SecretMaterial,
        created_at: Option<Timestamp>,
        updated_at: Timestamp,
        version: u64,
    ) -> Result<ConnectionRecord, StoreError> {
        let mut record = ConnectionRecord {
            id: id.to_owned(),
            kind: kind.to_owned(),
            secrets: Vec::new(),
            retiring: Vec::new(),
            sealed: None,
            secret_count: Some(material.secrets.len()),
            retiring_until: material.retiring.iter().map(|r| r.until).collect(),
            created_at,
            updated_at: Some(updated_at),
            seal_version: Some(version),
        };
        match &self.sealer {
            Some(sealer) => {
                let plain = serde_json::to_vec(&material).unwrap_or_default();
                let context = seal_context(id, kind, Some(version));
                record.sealed = Some(sealer.seal(&context, &plain).await?);
            }
            None => {
                record.secrets = material.secrets;
                record.retiring = material.retiring;
            }
        }
        Ok(record)
    }

    /// The secrets of a record, opened when sealed.
    /// While a key is configured, a record without a seal is refused: its
    /// secrets were written around the key (or by hand).
    async fn material_of(&self, r: &ConnectionRecord) -> Result<SecretMaterial, StoreError> {
        let Some(sealed) = &r.sealed else {
            if self.sealer.is_some() {
                return Err(StoreError::Refused {
                    code: "unsealed".into(),
                    reason: format!(
                        "connection {} has no sealed secret while a key is configured; \
                         PUT /connections/{} writes it sealed",
                        r.id, r.id
                    ),
                });
            }
            return Ok(SecretMaterial {
                secrets: r.secrets.clone(),
                retiring: r.retiring.clone(),
            });
        };
        let Some(sealer) = &self.sealer else {
            return Err(StoreError::Refused {
                code: "no_key".into(),
                reason: format!(
                    "connection {} is sealed and no key is configured (CONNECTIONS_KEY_ID)",
                    r.id
                ),
            });
        };
        let context = seal_context(&r.id, &r.kind, r.seal_version);
        let plain = sealer.open(&context, sealed).await?;
        serde_json::from_slice(&plain).map_err(|_| StoreError::Invalid {
            id: r.id.clone(),
            reason: "sealed secrets are not readable".into(),
        })
    }

    /// The record of a new or replaced connection, at write `version`.
    async fn record_of(
        &self,
        c: &ServiceConnection,
        created_at: Timestamp,
        at: Timestamp,
        version: u64,
    ) -> Result<ConnectionRecord, StoreError> {
        let material = SecretMaterial {
            secrets: c
                .credentials
                .secrets()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            retiring: Vec::new(),
        };
        self.connection_record_of(
            &c.id,
            c.credentials.kind(),
            material,
            Some(created_at),
            at,
            version,
        )
        .await
    }
}

#[async_trait]
impl ConnectionStore for DynamoStore {
    async fn put_connection(&self, c: &ServiceConnection) -> Result<(), StoreError> {
        let now = Timestamp::now();
        let version = match self.connection_record(&c.id).await? {
            Some(current) => current.next_version(),
            None => 1,
        };
        let record = self.record_of(c, now, now, version).await?;
        self.put_item(&self.tables.connections, &record).await
    }

    async fn get_connection(&self, id: &str) -> Result<Option<ServiceConnection>, StoreError> {
        let Some(r) = self.connection_record(id).await? else {
            return Ok(None);
        };
        let now = Timestamp::now();
        let material = self.material_of(&r).await?;
        let mut secrets = material.secrets;
        // Signing uses every live secret: receivers check any of them.
        if r.kind == "webhook_signing" {
            secrets.extend(
                material
                    .retiring
                    .into_iter()
                    .filter(|s| s.until > now)
                    .map(|s| s.secret),
            );
        }
        let credentials =
            Credentials::from_parts(&r.kind, secrets).ok_or_else(|| StoreError::Invalid {
                id: id.to_owned(),
                reason: format!("unknown or empty connection kind {:?}", r.kind),
            })?;
        Ok(Some(ServiceConnection {
            id: r.id,
            credentials,
        }))
    }

    async fn create_connection(
        &self,
        c: &ServiceConnection,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let record = self.record_of(c, at, at, 1).await?;
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.connections)
            .set_item(Some(to_item(&record)?))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        written(result)
    }

    async fn replace_connection(
        &self,
        c: &ServiceConnection,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let Some(current) = self.connection_record(&c.id).await? else {
            return Ok(false);
        };
        let version = current.next_version();
        let mut record = self.record_of(c, at, at, version).await?;
        record.created_at = current.created_at;
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.connections)
            .set_item(Some(to_item(&record)?))
            .condition_expression("attribute_exists(id)")
            .send()
            .await;
        written(result)
    }

    async fn rotate_connection(
        &self,
        id: &str,
        secret: &str,
        grace_until: Timestamp,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let Some(current) = self.connection_record(id).await? else {
            return Ok(false);
        };
        let material = self.material_of(&current).await?;
        let mut retiring: Vec<RetiringSecret> = material
            .retiring
            .iter()
            .filter(|s| s.until > at)
            .cloned()
            .collect();
        retiring.extend(material.secrets.iter().map(|s| RetiringSecret {
            secret: s.clone(),
            until: grace_until,
        }));
        // The API checks the limit on the record it read; one written since
        // (another rotation) is "changed meanwhile", and a retry is refused.
        if retiring.len() > crate::domain::connection::MAX_RETIRING_SECRETS {
            return Ok(false);
        }
        let next = SecretMaterial {
            secrets: vec![secret.to_owned()],
            retiring,
        };
        let record = self
            .connection_record_of(
                id,
                &current.kind,
                next,
                current.created_at,
                at,
                current.next_version(),
            )
            .await?;
        // Only over the record that was read: two rotations never interleave.
        let mut req = self
            .client
            .put_item()
            .table_name(&self.tables.connections)
            .set_item(Some(to_item(&record)?));
        req = match current.updated_at {
            Some(t) => req
                .condition_expression("updated_at = :read")
                .expression_attribute_values(":read", s(t.to_string())),
            None => req
                .condition_expression("attribute_exists(id) AND attribute_not_exists(updated_at)"),
        };
        written(req.send().await)
    }

    async fn delete_connection(&self, id: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.tables.connections)
            .key("id", s(id))
            .condition_expression("attribute_exists(id)")
            .send()
            .await;
        written(result)
    }

    async fn connection_info(
        &self,
        id: &str,
    ) -> Result<Option<super::super::ConnectionInfo>, StoreError> {
        let now = Timestamp::now();
        Ok(self.connection_record(id).await?.map(|r| {
            let until: Vec<Timestamp> = if r.sealed.is_some() {
                r.retiring_until.clone()
            } else {
                r.retiring.iter().map(|s| s.until).collect()
            };
            super::super::ConnectionInfo {
                secrets: r.secret_count.unwrap_or(r.secrets.len()),
                retiring_until: until.into_iter().filter(|u| *u > now).collect(),
                id: r.id,
                kind: r.kind,
                created_at: r.created_at,
                updated_at: r.updated_at,
            }
        }))
    }
}

impl DynamoStore {
    async fn connection_record(&self, id: &str) -> Result<Option<ConnectionRecord>, StoreError> {
        match self.get_item(&self.tables.connections, id).await? {
            Some(item) => from_item(id, item).map(Some),
            None => Ok(None),
        }
    }
}
