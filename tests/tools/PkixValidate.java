//! Java's own PKIX CertPathValidator as a relying party: trusts one root, validates a leaf
//! and its issuing CA against it (RFC 5280 path validation, revocation not checked), and
//! optionally requires extended key usages of the leaf, as a Java TLS or signature stack
//! would. Compiled with javac by the tests at test time (tests/validators.rs).
//!
//! Usage: java -cp DIR PkixValidate ROOT.pem CHAIN.pem[=EKU-OID,EKU-OID...] ...
//! Each CHAIN.pem holds a leaf first, then its issuing CA; after `=`, the extended key usages
//! its leaf must have. Prints "CHAIN.pem: VALID <subject>" or "CHAIN.pem: INVALID index=N
//! reason=R: message" for each, and exits 1 if any is invalid (one JVM for many chains).

import java.io.FileInputStream;
import java.security.cert.CertPath;
import java.security.cert.CertPathValidator;
import java.security.cert.CertPathValidatorException;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.PKIXParameters;
import java.security.cert.TrustAnchor;
import java.security.cert.X509CertSelector;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;

public class PkixValidate {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: PkixValidate ROOT.pem CHAIN.pem[=EKU-OID,...] ...");
            System.exit(2);
        }
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        X509Certificate root;
        try (FileInputStream in = new FileInputStream(args[0])) {
            root = (X509Certificate) cf.generateCertificate(in);
        }
        boolean allValid = true;
        for (int i = 1; i < args.length; i++) {
            String[] parts = args[i].split("=", 2);
            allValid &= validate(cf, root, parts[0], parts.length > 1 ? parts[1] : "");
        }
        System.exit(allValid ? 0 : 1);
    }

    static boolean validate(CertificateFactory cf, X509Certificate root, String file, String ekus)
            throws Exception {
        List<X509Certificate> chain = new ArrayList<>();
        try (FileInputStream in = new FileInputStream(file)) {
            for (Certificate c : cf.generateCertificates(in)) {
                chain.add((X509Certificate) c);
            }
        }
        PKIXParameters params =
                new PKIXParameters(Collections.singleton(new TrustAnchor(root, null)));
        params.setRevocationEnabled(false);
        if (!ekus.isEmpty()) {
            X509CertSelector leaf = new X509CertSelector();
            leaf.setExtendedKeyUsage(new HashSet<>(Arrays.asList(ekus.split(","))));
            params.setTargetCertConstraints(leaf);
        }
        CertPath path = cf.generateCertPath(chain);
        try {
            CertPathValidator.getInstance("PKIX").validate(path, params);
            System.out.println(file + ": VALID " + chain.get(0).getSubjectX500Principal());
            return true;
        } catch (CertPathValidatorException e) {
            System.out.println(
                    file + ": INVALID index=" + e.getIndex() + " reason=" + e.getReason() + ": "
                            + e.getMessage());
            return false;
        }
    }
}
