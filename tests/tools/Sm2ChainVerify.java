// Sm2ChainVerify: BouncyCastle's judgement of an SM2 certificate chain, for signet's tests.
//
// Usage: java -cp bcprov.jar:bcpkix.jar:. Sm2ChainVerify ROOT.pem [CA.pem ...] LEAF.pem
//
// Checks each certificate's SM2-with-SM3 signature with its issuer's key (the root with its
// own), under BouncyCastle's SM2 distinguishing ID, GM/T 0009's "1234567812345678", then runs
// PKIX path validation from the leaf to the root as trust anchor (revocation not checked).
// Prints one "VERIFIED <subject>" line per certificate and "PATH VALID" and exits 0, or
// prints what failed and exits 1.

import java.io.FileInputStream;
import java.security.Security;
import java.security.cert.CertPath;
import java.security.cert.CertPathValidator;
import java.security.cert.CertificateFactory;
import java.security.cert.PKIXParameters;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

import org.bouncycastle.jce.provider.BouncyCastleProvider;

public class Sm2ChainVerify {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: Sm2ChainVerify ROOT.pem [CA.pem ...] LEAF.pem");
            System.exit(2);
        }
        Security.addProvider(new BouncyCastleProvider());
        CertificateFactory cf = CertificateFactory.getInstance("X.509", "BC");
        List<X509Certificate> certs = new ArrayList<>();
        for (String path : args) {
            try (FileInputStream in = new FileInputStream(path)) {
                certs.add((X509Certificate) cf.generateCertificate(in));
            }
        }
        try {
            // certs[0] is the root; each next one is signed by the one before it.
            for (int i = 0; i < certs.size(); i++) {
                X509Certificate cert = certs.get(i);
                X509Certificate issuer = certs.get(i == 0 ? 0 : i - 1);
                if (!"SM3WITHSM2".equalsIgnoreCase(cert.getSigAlgName())) {
                    throw new IllegalStateException(cert.getSubjectX500Principal()
                        + " is signed with " + cert.getSigAlgName() + ", not SM3withSM2");
                }
                cert.verify(issuer.getPublicKey(), "BC");
                System.out.println("VERIFIED " + cert.getSubjectX500Principal());
            }
            List<X509Certificate> path = new ArrayList<>(certs.subList(1, certs.size()));
            Collections.reverse(path);
            CertPath cp = cf.generateCertPath(path);
            PKIXParameters params = new PKIXParameters(
                Collections.singleton(new TrustAnchor(certs.get(0), null)));
            params.setRevocationEnabled(false);
            CertPathValidator.getInstance("PKIX", "BC").validate(cp, params);
            System.out.println("PATH VALID");
        } catch (Exception e) {
            System.out.println("FAILED: " + e);
            System.exit(1);
        }
    }
}
