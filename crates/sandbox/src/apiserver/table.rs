//! Table output (`as=Table`) with the CRD's additionalPrinterColumns, as `kubectl get` asks for it.
