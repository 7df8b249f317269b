-- 0003_sp_root_domain: a service provider's root domain, as jambonz's
-- service_providers.root_domain (VARCHAR(128) UNIQUE, nullable). A
-- service-provider key may only give an account a sip_realm that is this
-- domain or under it (README, "Who may claim a realm"); an admin may assign
-- any realm. NULL (not '') when unset, so UNIQUE ignores it; lower-case like
-- sip_realm, because both are host names compared label by label.
ALTER TABLE service_providers ADD COLUMN root_domain text
    CONSTRAINT service_providers_root_domain_check
        CHECK (root_domain <> '' AND root_domain = lower(btrim(root_domain)) AND char_length(root_domain) <= 128),
    ADD CONSTRAINT service_providers_root_domain_key UNIQUE (root_domain);
