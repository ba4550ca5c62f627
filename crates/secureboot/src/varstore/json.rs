//! JSON export and import of a store's variables, in the shape of
//! `virt-fw-vars --output-json` / `--set-json` (version 2), with signature
//! databases decoded for PK, KEK, db and dbx.

use serde::{Deserialize, Serialize};
use trustlaunch_eventlog::{hex, Guid};

use super::{EfiTime, VarStore, VarStoreError, Variable};
use crate::siglist::{SignatureDb, SignatureEntryView};

impl VarStore {
    /// signature databases decoded for PK, KEK, db, dbx.
    pub fn to_json(&self) -> VarStoreJson {
        let variables = self
            .variables
            .iter()
            .map(|v| {
                let sigdb = matches!(v.name.as_str(), "PK" | "KEK" | "db" | "dbx")
                    .then(|| SignatureDb::parse(&v.data).ok().map(|db| db.view()))
                    .flatten();
                VariableJson {
                    name: v.name.clone(),
                    guid: v.guid.to_string(),
                    attr: v.attributes,
                    data: hex::encode(&v.data),
                    time: (!v.timestamp.is_zero()).then(|| hex::encode(&v.timestamp.to_bytes())),
                    signatures: sigdb,
                }
            })
            .collect();
        VarStoreJson {
            version: 2,
            variables,
        }
    }

    /// Replaces all variables with those of a JSON export (ours or
    /// virt-fw-vars'); decoded signatures are ignored, `data` rules.
    pub fn set_from_json(&mut self, json: &VarStoreJson) -> Result<(), VarStoreError> {
        let mut vars = Vec::new();
        for j in &json.variables {
            let bad = |field| VarStoreError::BadJson {
                name: j.name.clone(),
                field,
            };
            let guid = Guid::parse(&j.guid).ok_or(bad("guid"))?;
            let data = hex::decode(&j.data).ok_or(bad("data"))?;
            let timestamp = match &j.time {
                Some(t) => {
                    let b: [u8; 16] = hex::decode(t)
                        .and_then(|b| b.try_into().ok())
                        .ok_or(bad("time"))?;
                    EfiTime::from_bytes(b)
                }
                None => EfiTime::default(),
            };
            let mut v = Variable::new(&j.name, guid, j.attr, data);
            v.timestamp = timestamp;
            vars.push(v);
        }
        self.variables = vars;
        Ok(())
    }
}

/// One variable in the JSON export (virt-fw-vars field names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariableJson {
    /// Name.
    pub name: String,
    /// Vendor GUID, registry form.
    pub guid: String,
    /// Attributes.
    pub attr: u32,
    /// Data, hex.
    pub data: String,
    /// EFI_TIME, hex (absent when zero).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub time: Option<String>,
    /// Decoded signature database (PK, KEK, db, dbx; ours only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub signatures: Option<Vec<SignatureEntryView>>,
}

/// The JSON export (virt-fw-vars `--output-json` shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VarStoreJson {
    /// Format version (2, as virt-fw-vars).
    pub version: u32,
    /// The variables.
    pub variables: Vec<VariableJson>,
}
